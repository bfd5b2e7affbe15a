"""Hub-shaped data: local folders that copy FineWeb-2's and CulturaX's layout (README YAML ``configs:``, column
names and types), streamed as ``IterableDataset`` like the Hub (partial copies: ``test_local_layouts.py``)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_from_disk

from conftest import FAST, TINY_RECIPE, write_jsonl
from xinstruct.config import DataConfig, SeedConfig, WebTextConfig
from xinstruct.config_loader import load_recipe
from xinstruct.data.sample import sample_file
from xinstruct.data.seeds import load_seeds
from xinstruct.data.webtext import load_webtext
from xinstruct.languages import get
from xinstruct.pipeline import run


def _texts(code):
    import json

    return [json.loads(line)["text"] for line in sample_file("webtext", code).read_text(encoding="utf-8").splitlines()]


def _repo(root, configs: dict[str, list[dict]], schema: pa.Schema):
    """A dataset repo folder: data/<config>/train/000_00000.parquet per config and a README with ``configs:``."""
    header = ["---", "configs:"]
    for name, rows in configs.items():
        folder = root / "data" / name / "train"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "000_00000.parquet")
        header += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: data/{name}/train/*"]
    (root / "README.md").write_text("\n".join(header + ["---", "", "# A local copy of the layout", ""]),
                                    encoding="utf-8")
    return root


FINEWEB2 = pa.schema([("text", pa.string()), ("id", pa.string()), ("dump", pa.string()), ("url", pa.string()),
                      ("date", pa.string()), ("file_path", pa.string()), ("language", pa.string()),
                      ("language_score", pa.float64()), ("language_script", pa.string()),
                      ("minhash_cluster_size", pa.int64()), ("top_langs", pa.string())])
CULTURAX = pa.schema([("text", pa.string()), ("timestamp", pa.string()), ("url", pa.string()),
                      ("source", pa.string())])


def fineweb2(root, codes=("sw", "ta", "th"), rows=20):
    configs = {}
    for code in codes:
        lang = get(code)
        iso3 = lang.flores.split("_")[0]
        configs[lang.flores] = [
            {"text": text, "id": f"<urn:uuid:{code}-{i}>", "dump": "CC-MAIN-2024-10", "url": f"https://example.org/{code}/{i}",
             "date": "2024-02-20T00:00:00Z", "file_path": "s3://x", "language": iso3, "language_score": 0.99,
             "language_script": lang.script, "minhash_cluster_size": 1, "top_langs": "{}"}
            for i, text in enumerate(_texts(code)[:rows])
        ]
    return _repo(root, configs, FINEWEB2)


def culturax(root, codes=("sw", "ta")):
    configs = {code: [{"text": t, "timestamp": "2021/01/01", "url": f"https://example.org/{i}", "source": "mC4"}
                      for i, t in enumerate(_texts(code))] for code in codes}
    return _repo(root, configs, CULTURAX)


@pytest.fixture
def count_rows(monkeypatch):
    """Counts the rows every streamed dataset yields (what the reader actually reads)."""
    import datasets

    read = {"rows": 0}
    original = datasets.IterableDataset.__iter__

    def counting(self):
        for row in original(self):
            read["rows"] += 1
            yield row

    monkeypatch.setattr(datasets.IterableDataset, "__iter__", counting)
    return read


def test_fineweb2_layout_keeps_rows_in_every_language_and_reads_only_the_limit(tmp_path, count_rows):
    data = DataConfig(webtext=WebTextConfig(path=str(fineweb2(tmp_path / "fineweb-2")), config="{flores}",
                                            limit_per_language=5))
    kept, dropped, report = load_webtext(data, ["sw", "ta", "th"])
    assert sorted(set(kept["language"])) == ["sw", "ta", "th"]
    assert len(kept) + len(dropped) == 15 and count_rows["rows"] == 15  # 5 per language, no more streamed


def test_culturax_layout_with_two_letter_configs(tmp_path):
    data = DataConfig(webtext=WebTextConfig(path=str(culturax(tmp_path / "CulturaX")), config="{code}",
                                            limit_per_language=4))
    kept, dropped, _ = load_webtext(data, ["sw", "ta"])
    assert sorted(set(kept["language"])) == ["sw", "ta"] and len(kept) + len(dropped) == 8


def test_a_shuffle_buffer_draws_a_seeded_random_sample(tmp_path):
    root = fineweb2(tmp_path / "fineweb-2", codes=("sw",))
    first = load_webtext(DataConfig(webtext=WebTextConfig(path=str(root), config="{flores}", limit_per_language=5)),
                         ["sw"])[0]
    shuffled = [load_webtext(DataConfig(webtext=WebTextConfig(path=str(root), config="{flores}", limit_per_language=5,
                                                              shuffle_buffer=20)), ["sw"], seed=7)[0]["id"]
                for _ in range(2)]
    assert shuffled[0] == shuffled[1] and shuffled[0] != first["id"]


def test_rows_of_another_language_or_script_in_a_stream_are_skipped_not_counted(tmp_path, count_rows):
    lang = get("sw")
    rows = [{"text": t, "language": "swh", "language_script": "Latn"} for t in _texts("sw")[:3]]
    rows.insert(0, {"text": "x" * 300, "language": "swh", "language_script": "Arab"})
    rows.insert(0, {"text": "y" * 300, "language": "ful", "language_script": "Latn"})
    root = _repo(tmp_path / "mixed", {lang.flores: rows}, pa.schema([("text", pa.string()), ("language", pa.string()),
                                                                     ("language_script", pa.string())]))
    data = DataConfig(webtext=WebTextConfig(path=str(root), config="{flores}", limit_per_language=3))
    kept, dropped, _ = load_webtext(data, ["sw"])
    assert len(kept) + len(dropped) == 3 and count_rows["rows"] == 5


def test_seeds_with_three_letter_codes_and_ids_reused_across_languages(tmp_path):
    rows = []
    for code, iso3 in (("sw", "swh"), ("ta", "tam")):
        for i in range(4):
            rows.append({"id": f"seed-{i}", "language": iso3, "instruction": f"Explain topic {i}.",
                         "output": f"{code} answer {i}"})
    path = write_jsonl(tmp_path / "seeds.jsonl", rows)
    seeds, report = load_seeds(SeedConfig(path=str(path)), ["sw", "ta"])
    assert report["rows_out_per_language"] == {"sw": 4, "ta": 4}
    from xinstruct.rundir import Step
    from xinstruct.stages.generation import build_seed

    recipe = load_recipe(None, ["languages=[sw,ta]", f"data.seeds.path={path}",
                                "data.seeds.heldout_min_per_language=1"])
    step = Step(tmp_path, "seed", {})
    step.begin()
    build_seed(recipe, step)
    built = step.load()
    assert len(set(built["id"])) == 8 and {i.split(":")[0] for i in built["id"]} == {"sw", "ta"}
    by_id = {r["id"]: r for r in built}
    assert by_id["ta:seed-1"]["output"] == "ta answer 1" and by_id["sw:seed-1"]["output"] == "sw answer 1"


def test_a_recipe_on_the_fineweb2_layout_runs_to_candidates(tmp_path, tiny_model):
    root = fineweb2(tmp_path / "fineweb-2")
    recipe = load_recipe(TINY_RECIPE, FAST + [f"data.webtext.path={root}", 'data.webtext.config="{flores}"',
                                              "data.webtext.limit_per_language=8"])
    results = run(recipe, tmp_path / "run", until="candidates", echo=lambda s: None)
    assert results[-1].name == "candidates" and results[-1].status == "done"
    webtext = load_from_disk(str(tmp_path / "run" / "webtext" / "data"))
    assert sorted(set(webtext["language"])) == ["sw", "ta", "th"]
    seeds = load_from_disk(str(tmp_path / "run" / "seed" / "data"))
    assert len(set(seeds["id"])) == len(seeds)
