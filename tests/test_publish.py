"""Publishing: the dataset folder loads with `datasets` and trains a stock TRL trainer; cards; pushes to an
in-process fake Hub (revisions per iteration, tags, no-op re-push, the token never leaks)."""

import json
import logging

import pytest
import yaml
from datasets import load_dataset
from fake_hub import SENTINEL
from huggingface_hub import DatasetCard, ModelCard

from xinstruct.publish import PublishError, build_dataset_repo, push, render_model_card


@pytest.fixture(scope="module")
def repo_folder(tiny_run, tmp_path_factory):
    parent = tmp_path_factory.mktemp("published")
    return build_dataset_repo(tiny_run[0], parent / "x-instruction")


def test_every_language_and_all_load_by_name(repo_folder, tiny_run, monkeypatch):
    monkeypatch.chdir(repo_folder.parent)
    full = load_dataset("x-instruction")["train"]  # the default config is `all`
    per_lang = {code: load_dataset("x-instruction", code)["train"] for code in ("sw", "ta", "th")}
    assert sum(len(d) for d in per_lang.values()) == len(full)
    assert all(set(d["language"]) == {code} for code, d in per_lang.items())
    div = json.loads((tiny_run[0] / "diversified" / "manifest.json").read_text())
    assert len(full) == div["rows_out"]
    row = full[0]
    assert set(row) == {"id", "language", "instruction", "output", "messages", "source", "rating", "cluster", "iteration"}
    name = {"sw": "Swahili", "ta": "Tamil", "th": "Thai"}[row["language"]]
    assert row["messages"] == [{"role": "user", "content": f"{row['instruction']} Answer in {name}."},
                               {"role": "assistant", "content": row["output"]}]
    iter1 = load_dataset("x-instruction", "iter-1")["train"]
    kept1 = json.loads((tiny_run[0] / "iter-1" / "kept" / "manifest.json").read_text())
    assert len(iter1) == kept1["rows_out"]


def test_card_yaml_parses_back(repo_folder):
    card = DatasetCard.load(repo_folder / "README.md")
    data = card.data.to_dict()
    assert data["language"] == ["sw", "ta", "th"] and data["task_categories"] == ["text-generation"]
    names = [c["config_name"] for c in data["configs"]]
    assert names[:4] == ["all", "sw", "ta", "th"] and "iter-1" in names and "iter-2" in names
    assert next(c for c in data["configs"] if c["config_name"] == "all")["default"] is True
    assert data["size_categories"] and data["pretty_name"] == "X-Instruction" and "x-instruction" in data["tags"]
    text = card.text
    assert "| sw | Swahili |" in text and "±" in text and "@inproceedings{li-etal-2024-x" in text
    for plot in ("output_length.png", "rating_distribution.png", "cluster_sizes.png"):
        assert f"plots/{plot}" in text and (repo_folder / "plots" / plot).stat().st_size > 1000


def test_stock_sft_trainer_trains_on_the_published_dataset(repo_folder, tiny_model, monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    monkeypatch.chdir(repo_folder.parent)
    train = load_dataset("x-instruction")["train"]
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, use_cpu=True, bf16=False, report_to="none"),
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0


def test_model_cards_per_role(tiny_run):
    for role, marker in (("generator", "### English Instruction:"), ("evaluator", "### Rating:"), ("final", "### Response:")):
        card = render_model_card(tiny_run[0], role, f"user/x-instruction-{role}", dataset="user/x-instruction", dataset_revision="abc123")
        data = card.data.to_dict()
        assert data["base_model"] == "tiny" and data["datasets"] == ["user/x-instruction"] and data["library_name"] == "transformers"
        assert data["pipeline_tag"] == "text-generation" and {"x-instruction", "trl", "sft"} <= set(data["tags"])
        assert json.dumps(marker)[1:-1] in card.text and "learning_rate" in card.text
        reloaded = ModelCard(str(card))
        assert reloaded.data.to_dict()["language"] == ["sw", "ta", "th"]
    evaluator = render_model_card(tiny_run[0], "evaluator", "u/e")
    assert "held-out pseudo-rating accuracy" in evaluator.text


def test_bad_input(tiny_run, tmp_path):
    with pytest.raises(PublishError, match="no finished diversified step"):
        build_dataset_repo(tmp_path, tmp_path / "out")
    run_copy = tmp_path / "run"
    import shutil

    shutil.copytree(tiny_run[0], run_copy)
    recipe = yaml.safe_load((run_copy / "recipe.yaml").read_text())
    recipe["languages"].append("ur")
    (run_copy / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(PublishError, match="No rows for ur"):
        build_dataset_repo(run_copy, tmp_path / "out")


def test_push_puts_each_iteration_on_its_own_revision_and_repush_is_a_no_op(hub, tiny_run, caplog, capsys, tmp_path):
    caplog.set_level(logging.DEBUG)
    summary = push(tiny_run[0], "user/x-instruction", models=True)
    repo = hub.repos["user/x-instruction"]
    assert set(repo.branches) == {"main", "iter-1", "iter-2"}
    kept_hash = json.loads((tiny_run[0] / "iter-1" / "kept" / "manifest.json").read_text())["hash"]
    assert f"iter-1-{kept_hash}" in repo.tags and repo.tags[f"iter-1-{kept_hash}"] == repo.branches["iter-1"]
    main = hub.files("user/x-instruction", "main")
    assert {"README.md", "data/sw/train-00000-of-00001.parquet", "plots/output_length.png"} <= set(main)
    assert "iterations/iter-1/train-00000-of-00001.parquet" in main
    iter1 = hub.files("user/x-instruction", "iter-1")
    assert "data/ta/train-00000-of-00001.parquet" in iter1 and not any(p.startswith("iterations/") for p in iter1)
    card = DatasetCard(main["README.md"].decode())
    assert [c["config_name"] for c in card.data.to_dict()["configs"]][:2] == ["all", "sw"]
    models = {m["repo_id"] for m in summary["models"]}
    assert models == {"user/x-instruction-generator", "user/x-instruction-evaluator", "user/x-instruction-model"}
    model_card = ModelCard(hub.files("user/x-instruction-model")["README.md"].decode())
    assert model_card.data.to_dict()["datasets"] == ["user/x-instruction"]
    assert "config.json" in hub.files("user/x-instruction-model")
    assert all(r["new_commit"] for r in summary["revisions"])
    assert hub.validated >= 3  # each README's YAML went through the Hub's validate-yaml route

    commits_before = sum(len(r.commits) for r in hub.repos.values())
    again = push(tiny_run[0], "user/x-instruction", models=True)
    assert not any(r["new_commit"] for r in again["revisions"] + again["models"])
    assert sum(len(r.commits) for r in hub.repos.values()) == commits_before

    # the token went only into Authorization headers: no file, card, log or output holds it
    for repo_state in hub.repos.values():
        for files in repo_state.commits.values():
            assert not any(SENTINEL.encode() in content for content in files.values())
    for _method, path, _headers, body in hub.requests:
        assert SENTINEL.encode() not in body and SENTINEL not in path
    assert SENTINEL not in caplog.text
    out = capsys.readouterr()
    assert SENTINEL not in out.out + out.err
    for path in tiny_run[0].rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".md", ".txt"):
            assert SENTINEL not in path.read_text(errors="ignore")


def test_push_bad_input(hub, tiny_run, monkeypatch):
    with pytest.raises(PublishError, match="Invalid repo id"):
        push(tiny_run[0], "user/bad name!")
    with pytest.raises(PublishError, match="needs a namespace"):
        push(tiny_run[0], "x-instruction")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PublishError, match="No Hugging Face token"):
        push(tiny_run[0], "user/x-instruction")
    assert not hub.requests
