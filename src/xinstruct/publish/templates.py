"""Where the files shipped beside the package live: ``hub_cards/`` and ``space/`` of the checkout, or the
copies installed with the wheel under ``<prefix>/share/x-instruction/``."""

from __future__ import annotations

import sys
from pathlib import Path


def shipped_path(folder: str, name: str) -> Path:
    """Path of ``<folder>/<name>`` (``hub_cards/...``, ``space/...``); a missing file is an error naming
    both places looked at."""
    candidates = [
        Path(__file__).resolve().parents[3] / folder / name,
        Path(sys.prefix) / "share" / "x-instruction" / folder / name,
    ]
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"{folder}/{name} not found in {', '.join(map(str, candidates))}.")


def template_path(name: str) -> Path:
    """Path of the card template ``hub_cards/<name>``."""
    return shipped_path("hub_cards", name)
