"""Shared parts of the project's `evaluate` modules (``metrics/win_rate``, ``metrics/language_fidelity``)."""

from __future__ import annotations


def text_pair_info(description: str, inputs_description: str):
    """``evaluate.MetricInfo`` of a metric over string ``predictions`` and string ``references``."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=inputs_description,
        features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
    )
