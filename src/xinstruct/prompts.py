"""The official X-Instruction prompt templates and the pair -> prompt/completion conversion.

The three templates are byte-identical to the authors' ``utils/inference.py``; the released
X-Instruction models expect exactly these strings (note the space before ``\\n\\n### Response:``).
"""

from __future__ import annotations

GENERATOR_TEMPLATE = (
    "Below is a text that describes a candidate output. Write an English instruction that can take the "
    "given text as an appropriate answer.\n\n### Text:\n{text}\n\n### English Instruction:"
)

FOLLOWER_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction} Answer in {language_name}. \n\n### Response:"
)

ASSISTANT_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction} Answer in {language_name} and the style of an AI "
    "assistant. \n\n### Response:"
)


# Zero-shot: the instruction is written in the target language, so the follower frame is used without the
# " Answer in {language_name}." clause; every other byte (including the space before "\n\n### Response:") stays.
ZERO_SHOT_TEMPLATE = FOLLOWER_TEMPLATE.replace(" Answer in {language_name}.", "")


def generator_prompt(text: str) -> str:
    """Prompt asking the generator for an English instruction answered by ``text``."""
    return GENERATOR_TEMPLATE.format(text=text)


def follower_prompt(instruction: str, language_name: str, assistant_style: bool = False) -> str:
    """Cross-lingual prompt: English ``instruction`` to be answered in ``language_name``."""
    template = ASSISTANT_TEMPLATE if assistant_style else FOLLOWER_TEMPLATE
    return template.format(instruction=instruction, language_name=language_name)


def zero_shot_prompt(instruction: str) -> str:
    """Zero-shot prompt: ``instruction`` written in the target language, inside the same Alpaca frame."""
    return ZERO_SHOT_TEMPLATE.format(instruction=instruction)


MODES = ("cross-lingual", "zero-shot")


def mode_prompt(mode: str, instruction: str, language_name: str, assistant_style: bool = False) -> str:
    """The prompt of an X-Instruction model in ``mode`` (chat and evaluation both ask this way): ``cross-lingual``, an
    English instruction answered in ``language_name`` (:func:`follower_prompt`), or ``zero-shot``, an instruction
    written in the target language itself (:func:`zero_shot_prompt`; ``language_name`` is not used)."""
    if mode == "cross-lingual":
        return follower_prompt(instruction, language_name, assistant_style)
    if mode == "zero-shot":
        return zero_shot_prompt(instruction)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def generator_example(instruction: str, output: str) -> dict[str, str]:
    """A seed pair as a generator training example (text -> English instruction).

    The completion follows the prompt directly, as in Alpaca-style training of the released models.
    """
    return {"prompt": generator_prompt(output), "completion": instruction}


def follower_example(instruction: str, output: str, language_name: str,
                     assistant_style: bool = False) -> dict[str, str]:
    """A pair as an instruction-follower training example (English instruction -> target-language text)."""
    return {"prompt": follower_prompt(instruction, language_name, assistant_style), "completion": output}


# The evaluator's rating prompt (ours: the paper does not publish one). The completion is exactly one
# character, "1", "2" or "3", on the line after "### Rating:"; Engine.score reads the three probabilities.
RATING_TEMPLATE = (
    "Below is an English instruction and a response written in {language_name}. Rate how well the response "
    "answers the instruction: 3 = a good answer, 2 = a related but weaker answer, 1 = not an answer to it."
    "\n\n### Instruction:\n{instruction}\n\n### Response ({language_name}):\n{response}\n\n### Rating:\n"
)
RATING_OPTIONS = ("1", "2", "3")


def rating_prompt(instruction: str, response: str, language_name: str) -> str:
    """Evaluator prompt for one (English instruction, target-language response) pair."""
    return RATING_TEMPLATE.format(instruction=instruction, response=response, language_name=language_name)


def evaluator_example(instruction: str, response: str, language_name: str, level: int) -> dict[str, str]:
    """A pseudo-rating as an evaluator training example: completion is exactly ``"1"``, ``"2"`` or ``"3"``."""
    if str(level) not in RATING_OPTIONS:
        raise ValueError(f"rating level must be one of {RATING_OPTIONS}, got {level!r}")
    return {"prompt": rating_prompt(instruction, response, language_name), "completion": str(level)}
