"""Language fidelity: the share of answers written in the requested language, by the project's language ID
(lingua; the most likely language must be the requested one). Empty answers count as not in the language."""

from __future__ import annotations

from typing import Any

from ..data import lid


def language_fidelity(texts: list[str], language: str) -> dict[str, Any]:
    """``{"fidelity", "in_language", "answers", "detected"}`` for answers that should be in ``language``."""
    if not texts:
        return {"fidelity": None, "in_language": 0, "answers": 0, "detected": {}}
    detections = lid.detect([t if t.strip() else "" for t in texts], language)
    hits = [bool(t.strip()) and d.detected == language for t, d in zip(texts, detections)]
    detected: dict[str, int] = {}
    for t, d in zip(texts, detections):
        key = (d.detected or "unknown") if t.strip() else "empty"
        detected[key] = detected.get(key, 0) + 1
    return {"fidelity": round(sum(hits) / len(texts), 4), "in_language": sum(hits), "answers": len(texts),
            "detected": dict(sorted(detected.items(), key=lambda kv: -kv[1]))}
