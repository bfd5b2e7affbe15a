"""Final tuning data use the byte-exact FOLLOWER template (and its assistant variant at the set share)."""

from datasets import Dataset

from xinstruct.config_loader import load_recipe
from xinstruct.prompts import ASSISTANT_TEMPLATE, FOLLOWER_TEMPLATE
from xinstruct.stages.tuning import final_training_set

ROWS = Dataset.from_dict({
    "id": [f"r{i}" for i in range(200)], "language": ["sw", "ta"] * 100,
    "instruction": [f"Instruction {i}" for i in range(200)], "output": [f"Output {i}" for i in range(200)],
})


def test_final_training_data_use_the_official_follower_template():
    data = final_training_set(load_recipe(None), ROWS)
    for row, ex in zip(ROWS, data):
        name = {"sw": "Swahili", "ta": "Tamil"}[row["language"]]
        assert ex["prompt"] == FOLLOWER_TEMPLATE.format(instruction=row["instruction"], language_name=name)
        assert ex["completion"] == row["output"]


def test_assistant_share_uses_the_assistant_variant_deterministically():
    recipe = load_recipe(None, ["final.assistant_share=0.25"])
    data = final_training_set(recipe, ROWS)
    assistant = [ex["prompt"].endswith("and the style of an AI assistant. \n\n### Response:") for ex in data]
    assert 30 <= sum(assistant) <= 70
    for row, ex, is_assistant in zip(ROWS, data, assistant):
        if is_assistant:
            name = {"sw": "Swahili", "ta": "Tamil"}[row["language"]]
            assert ex["prompt"] == ASSISTANT_TEMPLATE.format(instruction=row["instruction"], language_name=name)
    assert final_training_set(recipe, ROWS)["prompt"] == data["prompt"]
