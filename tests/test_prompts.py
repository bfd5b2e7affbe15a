"""The templates in the code are byte-identical to DESIGN.md's official templates."""

import ast
import re

import pytest

from conftest import SHARED
from xinstruct import prompts


def design_templates() -> dict[str, str]:
    design = SHARED / "DESIGN.md"
    if not design.exists():
        pytest.skip("../shared/DESIGN.md not present")
    text = design.read_text(encoding="utf-8")
    block = text.split("## Official prompt templates", 1)[1].split("```", 2)[1]
    found = {}
    for label, literal in re.findall(r"^(.+):\n(\".*\")$", block, flags=re.M):
        found[label.strip()] = ast.literal_eval(literal)
    return found


def test_three_templates_match_design_byte_for_byte():
    t = design_templates()
    assert len(t) == 3
    assert t["GENERATOR (xx text -> English instruction)"].encode() == prompts.GENERATOR_TEMPLATE.encode()
    assert t["FOLLOWER / FINAL MODEL (cross-lingual)"].encode() == prompts.FOLLOWER_TEMPLATE.encode()
    assert t["FINAL MODEL, assistant-style variant"].encode() == prompts.ASSISTANT_TEMPLATE.encode()


def test_follower_prompt_keeps_space_before_response():
    p = prompts.follower_prompt("Describe the monsoon.", "Swahili")
    assert p.endswith("Describe the monsoon. Answer in Swahili. \n\n### Response:")
    assert prompts.follower_prompt("X", "Tamil", assistant_style=True).endswith(
        "X Answer in Tamil and the style of an AI assistant. \n\n### Response:"
    )


def test_generator_example_puts_text_in_prompt_and_instruction_in_completion():
    ex = prompts.generator_example("Explain tides.", "Mawimbi ya bahari ...")
    assert ex["prompt"] == prompts.GENERATOR_TEMPLATE.format(text="Mawimbi ya bahari ...")
    assert ex["completion"] == "Explain tides."
