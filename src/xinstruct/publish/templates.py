"""Where the Jinja card templates live: ``hub_cards/`` of the checkout, or the copy installed with the
wheel under ``<prefix>/share/x-instruction/hub_cards``."""

from __future__ import annotations

import sys
from pathlib import Path


def template_path(name: str) -> Path:
    """Path of ``hub_cards/<name>``; a missing template is an error naming both places looked at."""
    candidates = [
        Path(__file__).resolve().parents[3] / "hub_cards" / name,
        Path(sys.prefix) / "share" / "x-instruction" / "hub_cards" / name,
    ]
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"Card template {name} not found in {', '.join(map(str, candidates))}.")
