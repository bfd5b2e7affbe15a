"""Web-text and seed loading, filters with counted skip reasons, bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from xinstruct.config import DataConfig, FilterConfig, SeedConfig, WebTextConfig
from xinstruct.data.filtering import BatchFilter, Decision, FilterRunner, RowFilter
from xinstruct.data.filters import Empty, ExactDuplicate, webtext_filters
from xinstruct.data.readers import DataError
from xinstruct.data.sample import sample_file
from xinstruct.data.seeds import load_seeds
from xinstruct.data.webtext import load_webtext
from xinstruct.languages import PAPER_LANGUAGES


def sample_rows(code, n=3):
    lines = sample_file("webtext", code).read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines[:n]]


def test_bundled_sample_covers_every_paper_language():
    for lang in PAPER_LANGUAGES:
        web = sample_file("webtext", lang.code).read_text(encoding="utf-8").splitlines()
        seeds = sample_file("seeds", lang.code).read_text(encoding="utf-8").splitlines()
        assert len(web) >= 24 and len(seeds) >= 16, lang.code
        for row in map(json.loads, web):
            assert 300 <= len(row["text"]) <= 1500


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "sw.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")
    cfg = DataConfig(webtext=WebTextConfig(path=str(tmp_path)))
    with pytest.raises(DataError, match=r"sw\.jsonl:2: malformed JSON line"):
        load_webtext(cfg, ["sw"])


def test_missing_text_field_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "sw.jsonl", [{"body": "x"}])
    with pytest.raises(DataError, match="no 'text' field.*data.webtext.text_field"):
        load_webtext(DataConfig(webtext=WebTextConfig(path=str(tmp_path))), ["sw"])


def test_filters_count_each_skip_reason(tmp_path):
    sw = sample_rows("sw", 3)
    ta = sample_rows("ta", 1)[0]
    rows = [
        {"id": "a", "text": sw[0]["text"]},
        {"id": "empty", "text": "   "},
        {"id": "short", "text": "Habari fupi."},
        {"id": "dup", "text": "  " + sw[0]["text"].upper() + " "},  # same after NFC + case folding
        {"id": "near", "text": sw[0]["text"][:-12] + " hivyo basi."},  # near duplicate
        {"id": "tamil", "text": ta["text"]},  # wrong language for sw
        {"id": "b", "text": sw[1]["text"]},
    ]
    write_jsonl(tmp_path / "sw.jsonl", rows)
    kept, dropped, report = load_webtext(DataConfig(webtext=WebTextConfig(path=str(tmp_path))), ["sw"])
    assert kept["id"] == ["a", "b"]
    assert report["skipped"] == {"empty": 1, "too_short": 1, "exact_duplicate": 1, "near_duplicate": 1,
                                 "wrong_language": 1}
    assert report["rows_in"] == 7 and report["rows_out"] == 2
    reasons = dict(zip(dropped["id"], dropped["reason"]))
    assert reasons["tamil"] == "wrong_language"
    assert dict(zip(dropped["id"], dropped["detected"]))["tamil"] == "ta"


def test_near_duplicates_found_in_thai_without_spaces(tmp_path):
    th = sample_rows("th", 2)
    text = th[0]["text"]
    rows = [{"id": "1", "text": text}, {"id": "2", "text": text[:-6] + "ครับผม"}, {"id": "3", "text": th[1]["text"]}]
    write_jsonl(tmp_path / "th.jsonl", rows)
    kept, _, report = load_webtext(DataConfig(webtext=WebTextConfig(path=str(tmp_path))), ["th"])
    assert kept["id"] == ["1", "3"] and report["skipped"] == {"near_duplicate": 1}


def test_reads_txt_parquet_and_subfolders(tmp_path):
    sw, hi, ta = sample_rows("sw", 2), sample_rows("hi", 1), sample_rows("ta", 1)
    (tmp_path / "sw.txt").write_text(f"{sw[0]['text']}\n\n{sw[1]['text']}\n", encoding="utf-8")
    pq.write_table(pa.table({"text": [hi[0]["text"]]}), tmp_path / "hi.parquet")
    write_jsonl(tmp_path / "ta" / "part-0.jsonl", [{"text": ta[0]["text"]}])
    cfg = DataConfig(webtext=WebTextConfig(path=str(tmp_path)), filters=FilterConfig(lid=True))
    kept, _, report = load_webtext(cfg, ["sw", "hi", "ta"])
    assert report["rows_out_per_language"] == {"sw": 2, "hi": 1, "ta": 1}
    assert set(kept["language"]) == {"sw", "hi", "ta"}


def test_limit_per_language(tmp_path):
    kept, _, report = load_webtext(DataConfig(webtext=WebTextConfig(limit_per_language=5)), ["fi", "vi"])
    assert report["rows_in"] == 10


def test_missing_local_path_is_an_error():
    with pytest.raises(DataError, match="no such file"):
        load_webtext(DataConfig(webtext=WebTextConfig(path="./nope/texts.jsonl")), ["sw"])


def test_seeds_from_a_single_file_with_language_column(tmp_path):
    path = write_jsonl(
        tmp_path / "seeds.jsonl",
        [
            {"language": "sw", "instruction": "Say hi.", "output": "Habari!"},
            {"language": "ta", "instruction": "Say hi.", "output": "வணக்கம்!"},
            {"language": "sw", "instruction": "", "output": "tupu"},
        ],
    )
    seeds, report = load_seeds(SeedConfig(path=str(path)), ["sw", "ta", "ur"])
    assert seeds["language"] == ["sw", "ta"]
    assert report["skipped"] == {"empty_instruction": 1}
    assert report["languages_without_seeds"] == ["ur"]


class Banned(RowFilter):
    """A filter a user adds: drops texts that contain a banned word."""

    name = "banned_word"

    def __init__(self, word: str):
        super().__init__()
        self.word = word

    def check(self, row):
        return self.name if self.word in row["text"] else None


class EveryOther(BatchFilter):
    """A batch filter: drops every second row that reaches it and notes the batch size on every row."""

    name = "every_other"

    def decide(self, rows):
        return [Decision(self.name if i % 2 else None, {"batch": len(rows)}) for i in range(len(rows))]


def test_a_new_filter_plugs_into_the_runner():
    texts = ["a cat", "", "a dog", "a cat", "a bird", "the dog", "a fish", "cats"]
    rows = [{"id": str(i), "language": "sw", "text": t} for i, t in enumerate(texts)]
    filters = [Empty(), Banned("dog"), ExactDuplicate(), EveryOther(), Banned("fish")]
    runner = FilterRunner(filters)
    result = runner.run(rows, "sw")
    # Row filters drop in input order; the batch filter sees the survivors ("a cat", "a bird", "a fish", "cats")
    # and drops every second one; rows it drops come after; the last row filter then sees "a cat", "a fish".
    assert [r["id"] for r in result.kept] == ["0"]
    assert [(r["id"], r["reason"]) for r in result.dropped] == [
        ("1", "empty"), ("2", "banned_word"), ("3", "exact_duplicate"), ("5", "banned_word"),
        ("4", "every_other"), ("7", "every_other"), ("6", "banned_word"),
    ]
    assert result.kept[0]["batch"] == 4 and "batch" not in result.dropped[0]
    assert result.reasons == [None, "empty", "banned_word", "exact_duplicate", "every_other", "banned_word",
                              "banned_word", "every_other"]
    runner.run(rows[:2], "ta")  # state is per run: "a cat" is no duplicate in "ta"
    runner.run([], "fi")
    assert runner.report.as_dict() == {
        "rows_in": 10, "rows_out": 2, "rows_in_per_language": {"sw": 8, "ta": 2, "fi": 0},
        "rows_out_per_language": {"sw": 1, "ta": 1, "fi": 0},
        "skipped": {"banned_word": 3, "empty": 2, "every_other": 2, "exact_duplicate": 1},
        "skipped_per_language": {"banned_word": {"sw": 3}, "empty": {"sw": 1, "ta": 1}, "every_other": {"sw": 2},
                                 "exact_duplicate": {"sw": 1}},
    }


def test_webtext_filters_follow_the_config():
    names = [f.name for f in webtext_filters(FilterConfig())]
    assert names == ["empty", "too_short", "too_long", "exact_duplicate", "near_duplicate", "wrong_language"]
    off = FilterConfig(dedup=False, near_dup_threshold=None, lid=False)
    assert [f.name for f in webtext_filters(off)] == ["empty", "too_short", "too_long"]


def test_one_id_for_two_different_texts_is_a_data_error(tmp_path):
    """MinHash keys rows by id: an id reused for another text is a clear error, not a traceback from the index."""
    sw = sample_rows("sw", 2)
    write_jsonl(tmp_path / "sw.jsonl", [{"id": "same", "text": sw[0]["text"]}, {"id": "same", "text": sw[1]["text"]}])
    with pytest.raises(DataError, match="Row id 'same' names two different texts"):
        load_webtext(DataConfig(webtext=WebTextConfig(path=str(tmp_path))), ["sw"])
