"""The candidate gate: empty, too short and non-English instructions are dropped and counted."""

from datasets import Dataset

from xinstruct.stages.generation import clean_instruction, gate_candidates


def test_gate_drops_and_counts_each_reason():
    rows = Dataset.from_dict({
        "id": ["ok", "empty", "short", "swahili", "ok2"],
        "instruction": ["Write a recipe for a fresh tomato sauce.", "", "Hi", "Andika mapishi ya mchuzi wa nyanya mbichi kwa familia.",
                        "How do you prevent malaria?"],
    })
    kept, dropped, counts = gate_candidates(rows, min_chars=8, english_min_confidence=0.0)
    assert kept["id"] == ["ok", "ok2"]
    assert counts == {"empty_instruction": 1, "too_short_instruction": 1, "non_english_instruction": 1}
    assert dict(zip(dropped["id"], dropped["detected"]))["swahili"] == "sw"


def test_confidence_floor_applies_on_top_of_the_top_language_rule():
    rows = Dataset.from_dict({"id": ["a"], "instruction": ["Write a recipe for cabbage salad."]})
    assert len(gate_candidates(rows, 8, 0.0)[0]) == 1
    assert len(gate_candidates(rows, 8, 0.99)[0]) == 0


def test_generated_instruction_is_cut_at_the_next_section():
    assert clean_instruction(" Describe the sea.\n\n### Text:\nmore") == "Describe the sea."
