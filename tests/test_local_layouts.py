"""Real layouts, as users have them on disk: partial copies of FineWeb-2 (its README lists every config, the copy
holds two), copies without README, big local shards, recipe-relative paths, and languages known by code alone."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_hub_layouts import FINEWEB2, _texts

from conftest import write_jsonl
from xinstruct import languages
from xinstruct.config import DataConfig, FilterConfig, SeedConfig, WebTextConfig
from xinstruct.config_loader import load_recipe
from xinstruct.data import readers
from xinstruct.data.readers import DataError, iter_rows
from xinstruct.data.seeds import load_seeds
from xinstruct.data.webtext import load_webtext

NO_FILTERS = FilterConfig(min_chars=1, dedup=False, near_dup_threshold=None, lid=False)


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Languages registered by a test stay in that test."""
    monkeypatch.setattr(languages, "_REGISTRY", dict(languages._REGISTRY))


def fineweb2_rows(lang, n=12, texts=None):
    texts = texts or [f"{lang.name} text number {i}. " * 20 for i in range(n)]
    return [{"text": t, "id": f"<urn:uuid:{lang.code}-{i}>", "dump": "CC-MAIN-2024-10", "url": f"https://e.org/{i}",
             "date": "2024-02-20T00:00:00Z", "file_path": "s3://x", "language": lang.fineweb2.split("_")[0],
             "language_score": 0.99, "language_script": lang.fineweb2.split("_")[1], "minhash_cluster_size": 1,
             "top_langs": "{}"} for i, t in enumerate(texts[:n])]


def write_shard(folder, rows, name="000_00000.parquet", row_group_size=None):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=FINEWEB2), folder / name, row_group_size=row_group_size)


def fineweb2_card(configs):
    """FineWeb-2's README front matter: every config with a train and a test split, each with a ``_removed``
    variant (the rows its filters dropped), sorted by name as on the Hub."""
    lines = ["---", "license: odc-by", "task_categories:", "- text-generation", "pretty_name: FineWeb 2",
             "size_categories:", "- n>1T", "configs:"]
    for name in sorted(configs):
        lines += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: data/{name}/train/*",
                  "  - split: test", f"    path: data/{name}/test/*"]
        lines += [f"- config_name: {name}_removed", "  data_files:", "  - split: train",
                  f"    path: data/{name}_removed/train/*"]
    return "\n".join(lines + ["---", "", "# 🥂 FineWeb2", "", "A sparkling update with 1000s of languages", ""])


def partial_fineweb2(root, present=("sw", "th")):
    """A local copy of FineWeb-2 made with ``--include "data/swh_Latn/*" --include "data/tha_Thai/*"`` plus the
    README: the README lists every config (``aai_Latn``, ``aak_Latn``, ... first), the copy holds two."""
    names = {languages.table_row(flores)["fineweb2"] for flores in languages.flores_codes()}
    names |= {"aai_Latn", "aak_Latn", "abk_Cyrl"}  # FineWeb-2 has ~1900 configs; these come before any FLORES one
    root.mkdir(parents=True)
    (root / "README.md").write_text(fineweb2_card(names), encoding="utf-8")
    for code in present:
        lang = languages.get(code)
        texts = _texts(code) if code in [lang.code for lang in languages.PAPER_LANGUAGES] else None  # the sample
        write_shard(root / "data" / lang.fineweb2 / "train", fineweb2_rows(lang, texts=texts))
        write_shard(root / "data" / lang.fineweb2 / "test", fineweb2_rows(lang, 2))
    return root


def test_the_partial_copy_fixture_meets_the_real_failure(tmp_path):
    """``datasets`` resolves the README's first config eagerly, so this layout fails when handed to it whole."""
    from datasets import load_dataset

    root = partial_fineweb2(tmp_path / "fineweb-2")
    assert (root / "README.md").read_text(encoding="utf-8").index("aai_Latn") < \
        (root / "README.md").read_text(encoding="utf-8").index("swh_Latn")
    with pytest.raises(Exception):  # noqa: B017 - FileNotFoundError or DataFilesNotFoundError by version
        next(iter(load_dataset(str(root), name="swh_Latn", split="train", streaming=True)))


def test_a_partial_fineweb2_copy_reads_the_configs_it_holds(tmp_path):
    root = partial_fineweb2(tmp_path / "fineweb-2")
    data = DataConfig(webtext=WebTextConfig(path=str(root), config="{fineweb2}", limit_per_language=6))
    kept, dropped, _ = load_webtext(data, ["sw", "th"])
    assert sorted(set(kept["language"])) == ["sw", "th"] and len(kept) + len(dropped) == 12
    test = list(iter_rows(str(root), "webtext", languages.get("sw"), "text", "{fineweb2}", split="test"))
    assert len(test) == 2


def test_a_language_absent_from_a_partial_copy_is_an_error_naming_its_config_and_those_present(tmp_path):
    root = partial_fineweb2(tmp_path / "fineweb-2")
    data = DataConfig(webtext=WebTextConfig(path=str(root), config="{fineweb2}"))
    with pytest.raises(DataError, match=r"tam_Taml.*data/tam_Taml/train/\*.*Present here: swh_Latn, tha_Thai\."):
        load_webtext(data, ["sw", "ta"])


def test_a_copy_without_readme_is_read_through_the_config_template(tmp_path):
    root = tmp_path / "fineweb-2"  # huggingface-cli download ... --include "data/swh_Latn/*": no README
    write_shard(root / "data" / "swh_Latn" / "train", fineweb2_rows(languages.get("sw"), texts=_texts("sw")))
    for config in ("{fineweb2}", "{flores}"):
        data = DataConfig(webtext=WebTextConfig(path=str(root), config=config, limit_per_language=5))
        kept, dropped, _ = load_webtext(data, ["sw"])
        assert len(kept) + len(dropped) == 5
    with pytest.raises(DataError, match=r"th \(config tha_Thai\).*Present here: swh_Latn"):
        load_webtext(DataConfig(webtext=WebTextConfig(path=str(root), config="{fineweb2}")), ["th"])


def test_a_limit_stops_reading_inside_a_big_local_shard(tmp_path, monkeypatch):
    lang = languages.get("sw")
    root = tmp_path / "fineweb-2"
    write_shard(root / "data" / "swh_Latn" / "train", fineweb2_rows(lang, 20_000, ["short"] * 20_000),
                row_group_size=2_000)
    materialised = {"batches": 0, "rows": 0}
    original = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            materialised["batches"] += 1
            materialised["rows"] += batch.num_rows
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    rows = list(iter_rows(str(root), "webtext", lang, "text", "{fineweb2}", limit=5))
    assert len(rows) == 5
    assert materialised["batches"] == 1 and materialised["rows"] == readers.PARQUET_BATCH_ROWS < 20_000


def test_a_shuffle_buffer_on_local_files_draws_a_seeded_sample_as_on_the_hub(tmp_path):
    from datasets import IterableDataset

    rows = [{"id": f"t{i}", "text": f"text {i}"} for i in range(40)]
    write_jsonl(tmp_path / "sw.jsonl", rows)
    data = DataConfig(webtext=WebTextConfig(path=str(tmp_path), limit_per_language=5, shuffle_buffer=16),
                      filters=NO_FILTERS)
    first, again = (load_webtext(data, ["sw"], seed=3)[0]["id"] for _ in range(2))
    plain = load_webtext(DataConfig(webtext=WebTextConfig(path=str(tmp_path), limit_per_language=5),
                                    filters=NO_FILTERS), ["sw"])[0]["id"]
    assert first == again and first != plain == ["t0", "t1", "t2", "t3", "t4"]
    hub_like = IterableDataset.from_generator(lambda: iter(rows)).shuffle(seed=3, buffer_size=16)
    assert first == [row["id"] for row, _ in zip(hub_like, range(5))]


def test_relative_data_paths_in_a_recipe_are_read_from_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "recipes"
    write_jsonl(folder / "texts" / "sw.jsonl", [{"text": t} for t in _texts("sw")[:4]])
    write_jsonl(folder / "seeds" / "sw.jsonl", [{"instruction": "Say hi.", "output": "Habari!"}])
    (folder / "run.yaml").write_text("languages: [sw]\ndata:\n  webtext: {path: texts/}\n  seeds: {path: seeds}\n",
                                     encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    recipe = load_recipe(folder / "run.yaml")
    assert recipe.data.webtext.path == str(folder / "texts") and recipe.data.seeds.path == str(folder / "seeds")
    kept, dropped, _ = load_webtext(recipe.data, ["sw"])
    assert len(kept) + len(dropped) == 4
    assert load_seeds(recipe.data.seeds, ["sw"])[1]["rows_out"] == 1


@pytest.mark.parametrize("path", ["seeds/", "./seeds", "~/no-such-xinstruct-seeds", "my/seeds/sw.jsonl", "sw.jsonl"])
def test_a_missing_local_path_is_an_error_naming_it_not_a_hub_request(tmp_path, monkeypatch, path):
    import datasets

    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append(a) or iter(()))
    (tmp_path / "recipe.yaml").write_text(f"languages: [sw]\ndata:\n  seeds: {{path: {path}}}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for cfg in (load_recipe(tmp_path / "recipe.yaml").data.seeds, SeedConfig(path=path)):
        with pytest.raises(DataError, match=f"{path.strip('./~').split('/')[0]}.*no such file or folder"):
            load_seeds(cfg, ["sw"])
    load_seeds(SeedConfig(path="someone/seed-pairs"), ["sw"])  # an owner/name id goes to the Hub
    assert asked == [("someone/seed-pairs",)]


def test_every_flores_200_language_has_its_fineweb2_and_culturax_names():
    codes = languages.flores_codes()
    assert len(codes) == len(set(codes)) == 204
    expected = {"sw": ("swh_Latn", "swh_Latn", "sw"), "ta": ("tam_Taml", "tam_Taml", "ta"),
                "ur": ("urd_Arab", "urd_Arab", "ur"), "th": ("tha_Thai", "tha_Thai", "th"),
                "am": ("amh_Ethi", "amh_Ethi", "am"), "zh": ("zho_Hans", "cmn_Hani", "zh"),
                "ar": ("arb_Arab", "arb_Arab", "ar"), "fa": ("pes_Arab", "fas_Arab", "fa"),
                "ne": ("npi_Deva", "npi_Deva", "ne"), "mn": ("khk_Cyrl", "khk_Cyrl", "mn"),
                "et": ("est_Latn", "ekk_Latn", "et"), "ms": ("zsm_Latn", "zsm_Latn", "ms"),
                "ckb": ("ckb_Arab", "ckb_Arab", "ckb"), "ace": ("ace_Latn", "ace_Latn", "ace")}
    for code, names in expected.items():
        lang = languages.get(code)
        assert (lang.flores, lang.fineweb2, lang.culturax) == names, code
    assert languages.get("zho_Hant").fineweb2 == "cmn_Hani" and languages.get("zho_Hant").script == "Hant"
    with pytest.raises(languages.UnknownLanguageError, match="amh_Ethi.*project code is am"):
        languages.get("amh_Ethi")


def test_an_extra_language_needs_only_its_code(tmp_path):
    recipe = load_recipe(None, ["languages=[sw,am]", "data.filters.lid=false"])  # lingua has no Amharic
    am = languages.get("am")
    assert recipe.languages == ["sw", "am"] and (am.name, am.script, am.fineweb2) == ("Amharic", "Ethi", "amh_Ethi")
    named = tmp_path / "r.yaml"
    named.write_text("languages: [am]\nextra_languages:\n  am: {name: Amharic, script: Ethi}\n"
                     "data: {filters: {lid: false}}\n", encoding="utf-8")
    load_recipe(named)
    assert languages.get("am").flores == "amh_Ethi"  # not am_Ethi
    root = partial_fineweb2(tmp_path / "fineweb-2", present=("am", "zh"))
    for code in ("am", "zh"):  # zh: FineWeb-2's cmn_Hani config, rows labelled cmn / Hani
        rows = list(iter_rows(str(root), "webtext", languages.get(code), "text", "{fineweb2}"))
        assert len(rows) == 12, code
