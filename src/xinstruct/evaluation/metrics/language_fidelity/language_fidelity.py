"""Language fidelity as an `evaluate` module: the share of texts written in the requested language, by the
X-Instruction project's language ID (lingua; the most likely language must be the requested one).

Load it offline with ``evaluate.load("<path>/language_fidelity")``.
"""

import evaluate

from xinstruct.evaluation.fidelity import language_fidelity
from xinstruct.evaluation.modules import text_pair_info

_DESCRIPTION = """Share of answers in the requested language (ISO 639-1 code), by lingua language ID. Empty
answers count as not in the language."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): the answers.
    references (`list[str]`): the requested language code of each answer ("sw", "ta", ...).
Returns:
    fidelity (`float`): answers in their language / answers; per_language (`dict`): the same per code.
Examples:
    >>> metric = evaluate.load("language_fidelity")
    >>> metric.compute(predictions=["Habari ya asubuhi, rafiki yangu mpendwa."], references=["sw"])["fidelity"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LanguageFidelity(evaluate.Metric):
    def _info(self):
        return text_pair_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        per_language = {}
        for code in sorted(set(references)):
            texts = [p for p, r in zip(predictions, references) if r == code]
            per_language[code] = language_fidelity(texts, code)["fidelity"]
        hits = sum(per_language[code] * references.count(code) for code in per_language)
        return {"fidelity": hits / len(predictions) if predictions else None, "per_language": per_language}
