"""The candidate gate: empty, too short and non-English instructions are dropped and counted."""

from datasets import Dataset

from xinstruct.stages.generation import clean_instruction, gate_candidates


def test_gate_drops_and_counts_each_reason():
    rows = Dataset.from_dict({
        "id": ["ok", "empty", "short", "swahili", "ok2"],
        "instruction": ["Write a recipe for a fresh tomato sauce.", "", "Hi",
                        "Andika mapishi ya mchuzi wa nyanya mbichi kwa familia.", "How do you prevent malaria?"],
    })
    kept, dropped, report = gate_candidates(rows, min_chars=8, english_min_confidence=0.0)
    assert kept["id"] == ["ok", "ok2"]
    assert report.reasons() == {"empty_instruction": 1, "too_short_instruction": 1, "non_english_instruction": 1}
    assert dropped["id"] == ["empty", "short", "swahili"]  # input order
    assert dropped["reason"] == ["empty_instruction", "too_short_instruction", "non_english_instruction"]
    assert dict(zip(dropped["id"], dropped["detected"]))["swahili"] == "sw"
    assert dropped["detected"][:2] == [None, None] and dropped["english_confidence"][:2] == [0.0, 0.0]
    assert all(c > 0 for c in kept["english_confidence"])


def test_gate_counts_per_row_language_in_the_manifest_form():
    rows = Dataset.from_dict({
        "id": ["a", "b", "c", "d"],
        "language": ["ta", "sw", "ta", "sw"],
        "instruction": ["How do you prevent malaria?", "", "Hi", "Write a recipe for a fresh tomato sauce."],
    })
    _, _, report = gate_candidates(rows, 8, 0.0, lid_check=False)
    assert report.as_dict(sort_reasons=False, per_language_skips=False) == {
        "rows_in": 4, "rows_out": 2, "rows_in_per_language": {"ta": 2, "sw": 2},
        "rows_out_per_language": {"ta": 1, "sw": 1}, "skipped": {"empty_instruction": 1, "too_short_instruction": 1},
    }


def test_confidence_floor_applies_on_top_of_the_top_language_rule():
    rows = Dataset.from_dict({"id": ["a"], "instruction": ["Write a recipe for cabbage salad."]})
    assert len(gate_candidates(rows, 8, 0.0)[0]) == 1
    assert len(gate_candidates(rows, 8, 0.99)[0]) == 0


def test_generated_instruction_is_cut_at_the_next_section():
    assert clean_instruction(" Describe the sea.\n\n### Text:\nmore") == "Describe the sea."
