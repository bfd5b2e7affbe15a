"""Rating prompts and rating columns, shared by the evaluator's training (:mod:`.evaluator`) and the ratings of
every candidate (:mod:`.rating`).

Rating prompts, in training and in rating alike, hold the whole frame (template, instruction, cue) and a response
cut to ``refinement.response_tokens``.
"""

from __future__ import annotations

from datasets import Dataset

from ..budget import PromptFitter
from ..config import Recipe
from ..inference import Engine
from ..languages import get as get_language
from ..prompts import RATING_OPTIONS, rating_prompt

RATING_COLUMNS = ("p1", "p2", "p3", "expected_rating", "rating")


def rating_prompt_limit(recipe: Recipe) -> int | None:
    """The longest rating prompt: the evaluator's ``max_length`` less its completion (the digit and EOS), so that
    TRL never cuts a training row; the same limit holds when rating."""
    max_length = recipe.refinement.evaluator.training.get("max_length", 1024)
    return None if max_length is None else max_length - 2


def fit_rating_prompts(recipe: Recipe, fitter: PromptFitter, instructions: list[str], responses: list[str],
                       languages: list[str]) -> tuple[list[str], int]:
    """Rating prompts with the response cut to ``refinement.response_tokens`` and to the prompt limit (the frame
    and the instruction are never cut); and how many responses were cut."""
    budget, limit = recipe.refinement.response_tokens, rating_prompt_limit(recipe)
    fitted = []
    for instruction, response, code in zip(instructions, responses, languages):
        name = get_language(code).name
        render = lambda r, i=instruction, n=name: rating_prompt(i, r, n)  # noqa: E731
        fitted.append(fitter.fit(render, response, limit, budget))
    return [f.prompt for f in fitted], sum(f.cut for f in fitted)


def evaluator_training_set(recipe: Recipe, pseudo: Dataset, fitter: PromptFitter) -> tuple[Dataset, int]:
    """Pseudo-ratings as rating-prompt examples whose completion is exactly the level ("1", "2" or "3"); and how
    many responses the prompt budget cut."""
    prompts, cut = fit_rating_prompts(recipe, fitter, pseudo["instruction"], pseudo["response"], pseudo["language"])
    return Dataset.from_dict({"prompt": prompts, "completion": [str(level) for level in pseudo["level"]]}), cut


def score_ratings(engine: Engine, prompts: list[str]) -> dict[str, list]:
    """P(1), P(2), P(3), expected rating and argmax rating of each rating prompt, from one forward pass each."""
    return scores_from_probs(engine.score(prompts, list(RATING_OPTIONS)))


def scores_from_probs(probs: list) -> dict[str, list]:
    """The stored rating columns from (P(1), P(2), P(3)) per row."""
    return {
        "p1": [p[0] for p in probs],
        "p2": [p[1] for p in probs],
        "p3": [p[2] for p in probs],
        "expected_rating": [p[0] + 2 * p[1] + 3 * p[2] for p in probs],
        "rating": [1 + max(range(3), key=lambda j: p[j]) for p in probs],
    }
