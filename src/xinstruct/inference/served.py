"""Which model a server serves: :func:`served_models` asks it (``GET /v1/models``, then TGI's ``GET /info``) and
:func:`check_served` stops if the expected model is not among them (see :mod:`xinstruct.inference.endpoint`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx2

from ..errors import EndpointError

logger = logging.getLogger(__name__)


@dataclass
class Served:
    """What a server says it serves: ``names`` (from ``source``, e.g. ``GET /v1/models``); ``on_demand`` when it
    loads whatever model a request names (an unpinned ``transformers serve``: its list is what it can load)."""

    names: list[str]
    source: str
    on_demand: bool = False


def served_models(url: str, headers: dict[str, str], timeout: float) -> Served | None:
    """Ask the server at ``url`` which model(s) it serves: ``GET /v1/models`` (``data[].id``: vLLM, SGLang, TGI,
    ``transformers serve``), then TGI's ``GET /info`` (``model_id``). ``None`` when neither says (an error
    status, no such route, an answer without names). A server that cannot be reached raises
    ``httpx2.TransportError``."""
    with httpx2.Client(timeout=timeout, headers=headers) as client:
        for path, read in (("/v1/models", _listed), ("/info", _info)):
            response = client.get(url + path)
            if response.status_code != 200:
                continue
            try:
                served = read(response.json(), f"GET {url}{path}")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                continue
            if served is not None:
                return served
    return None


def _listed(data: Any, source: str) -> Served | None:
    entries = [entry for entry in data["data"] if isinstance(entry, dict)]
    names = [entry["id"] for entry in entries if isinstance(entry.get("id"), str)]
    # `status` ({"value": "loaded" | "unloaded"}) is transformers serve's: it loads any model a request names,
    # and a pinned one refuses other names itself
    on_demand = any(isinstance(entry.get("status"), dict) for entry in entries)
    return Served(names, source, on_demand) if names else None


def _info(data: Any, source: str) -> Served | None:
    name = data["model_id"]
    return Served([name], source) if isinstance(name, str) and name else None


def check_served(url: str, expected: str, served: Served | None) -> None:
    """Raise :class:`EndpointError` naming both models and ``url`` when ``served`` lists models and ``expected``
    is not among them; a server that does not say (``None``) gets a warning."""
    if served is None:
        logger.warning("%s does not say which model it serves (no GET /v1/models or /info): the engine cannot "
                       "check that it serves %r.", url, expected)
    elif serves(expected, served.names):
        logger.debug("%s serves %r (%s)", url, expected, served.source)
    elif served.on_demand:
        logger.info("%s does not list %r but loads the model a request names (%s).", url, expected, served.source)
    else:
        listed = ", ".join(repr(name) for name in served.names[:10])
        more = f" and {len(served.names) - 10} more" if len(served.names) > 10 else ""
        raise EndpointError(
            f"{url} serves {listed}{more} ({served.source}), not the expected model {expected!r} (engine.model). "
            "Point engine.base_urls at a server of that model or set engine.model to the name it serves; nothing "
            "was sent (check_model=False skips this check)."
        )


def serves(expected: str, names: Iterable[str]) -> bool:
    """Whether ``expected`` is among the served ``names``: the same name, or the same after stripping a trailing
    slash, or the same folder on this machine; ``org/model:policy`` (a router's provider suffix) matches
    ``org/model``."""
    names = list(names)
    if any(_same(expected, name) for name in names):
        return True
    base, _, suffix = expected.rpartition(":")
    return bool(base) and "/" not in suffix and any(_same(base, name) for name in names)


def _same(a: str, b: str) -> bool:
    a, b = a.rstrip("/") or a, b.rstrip("/") or b
    if a == b:
        return True
    return os.path.isdir(a) and os.path.isdir(b) and os.path.realpath(a) == os.path.realpath(b)
