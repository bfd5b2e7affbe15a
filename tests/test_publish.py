"""Publishing: the dataset folder loads with `datasets` and trains a stock TRL trainer; cards; pushes to an
in-process fake Hub (revisions per iteration, tags, no-op re-push, the token never leaks)."""

import json
import logging

import pytest
import yaml
from datasets import load_dataset, load_from_disk
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
    assert set(row) == {"id", "language", "instruction", "output", "messages", "source", "rating", "cluster",
                        "iteration"}
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
        args=SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, use_cpu=True, bf16=False,
                       report_to="none"),
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0


def test_model_cards_per_role(tiny_run):
    markers = (("generator", "### English Instruction:"), ("evaluator", "### Rating:"), ("final", "### Response:"))
    for role, marker in markers:
        card = render_model_card(tiny_run[0], role, f"user/x-instruction-{role}", dataset="user/x-instruction",
                                 dataset_revision="abc123")
        data = card.data.to_dict()
        if role == "final":  # trained on the published set; the generator and the evaluator made it
            assert data["datasets"] == ["user/x-instruction"] and "revision `abc123`" in card.text
        else:
            assert "datasets" not in data and "Part of the run that made" in card.text
        assert data["base_model"] == "tiny" and data["library_name"] == "transformers"
        assert data["pipeline_tag"] == "text-generation" and {"x-instruction", "trl", "sft"} <= set(data["tags"])
        assert json.dumps(marker)[1:-1] in card.text and "learning_rate" in card.text
        reloaded = ModelCard(str(card))
        assert reloaded.data.to_dict()["language"] == ["sw", "ta", "th"]
    evaluator = render_model_card(tiny_run[0], "evaluator", "u/e")  # the last iteration's, with its figures
    assert "held-out accuracy" in evaluator.text and "Iteration 2 of 2" in evaluator.text
    assert "rating head" in evaluator.text  # the tiny recipe's likelihood evaluator: the follower's weights + a head
    metrics = [m for r in evaluator.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]]
    assert {m["type"] for m in metrics} == {"accuracy", "roc_auc_3v1", "roc_auc_3v2", "planted_drop_rate"}
    assert "length-only" not in " ".join(m["name"] for m in metrics)  # references stay in the card's table


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
    assert models == {f"user/x-instruction-{suffix}" for suffix in ("generator", "follower", "evaluator", "model")}
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


def _heads(hub) -> dict[tuple[str, str], str]:
    return {(repo_id, branch): oid for repo_id, repo in hub.repos.items() for branch, oid in repo.branches.items()}


def _online(monkeypatch):
    """Tests run offline; reading the fake Hub back needs huggingface_hub and datasets online (the fake answers)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False, raising=False)


def test_every_iteration_s_follower_and_evaluator_get_a_revision_with_a_card(hub, tiny_run, tmp_path, monkeypatch):
    """``--models``: the follower and the evaluator of each iteration on branch ``iter-k`` (+ tag with the step hash)
    of ``<repo>-follower`` / ``-evaluator``, ``main`` = the last iteration; each card names the dataset revisions it
    trained on and made, carries the iteration's figures in ``model-index`` and links its neighbours.
    ``load_dataset`` and ``from_pretrained`` read revision ``iter-2`` back from the (fake) Hub."""
    from transformers import AutoModelForCausalLM

    run_dir = tiny_run[0]
    push(run_dir, "user/xi", models=True)
    for role in ("follower", "evaluator"):
        repo = hub.repos[f"user/xi-{role}"]
        assert set(repo.branches) == {"main", "iter-1", "iter-2"}
        for k in (1, 2):
            step_hash = json.loads((run_dir / f"iter-{k}" / role / "manifest.json").read_text())["hash"]
            assert repo.tags[f"iter-{k}-{step_hash}"] == repo.branches[f"iter-{k}"]
        assert hub.files(f"user/xi-{role}", "main") == hub.files(f"user/xi-{role}", "iter-2")
    first = ModelCard(hub.files("user/xi-evaluator", "iter-1")["README.md"].decode())
    assert "Iteration 1 of 2" in first.text and "datasets/user/xi/tree/iter-1" in first.text  # the rows it kept
    assert "user/xi-evaluator/tree/iter-2" in first.text and "Previous iteration" not in first.text
    results = first.data.to_dict()["model-index"][0]["results"]
    metrics = {m["name"]: m["value"] for r in results for m in r["metrics"]}
    report = json.loads((run_dir / "iter-1" / "evaluator" / "manifest.json").read_text())
    assert metrics["held-out accuracy"] == report["heldout_accuracy"]
    assert {"AUC of P(3), 3 vs 1", "drop rate of planted negatives"} <= set(metrics)
    follower = ModelCard(hub.files("user/xi-follower", "iter-2")["README.md"].decode())
    assert "datasets/user/xi/tree/iter-1" in follower.text  # trained on the kept set of iteration 1
    assert "user/xi-follower/tree/iter-1" in follower.text and "Next iteration" not in follower.text
    assert "language fidelity (held-out instructions)" in follower.text

    _online(monkeypatch)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    rows = load_dataset("user/xi", "sw", revision="iter-2", split="train")
    kept = load_from_disk(str(run_dir / "iter-2" / "kept" / "data")).filter(lambda r: r["language"] == "sw")
    assert sorted(rows["id"]) == sorted(kept["id"]) and len(rows) > 0
    model = AutoModelForCausalLM.from_pretrained("user/xi-evaluator", revision="iter-2")
    local = AutoModelForCausalLM.from_pretrained(run_dir / "iter-2" / "follower" / "model")  # likelihood evaluator
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), local.state_dict().values()))


def test_a_run_grown_by_one_iteration_reruns_nothing_and_pushes_only_what_is_new(hub, tiny_run, tmp_path):
    """``xinstruct run --set refinement.iterations=3`` on a finished K=2 run reuses iterations 1-2 (same manifest
    hashes, skipped), runs iteration 3, diversification and final tuning; ``push --iteration 3 --models`` then commits
    only on the new ``iter-3`` branches and on ``main``; the same push again commits nothing."""
    import shutil

    from conftest import FAST, TINY_RECIPE
    from xinstruct.config import load_recipe
    from xinstruct.pipeline import run

    run_dir = tmp_path / "grown"
    shutil.copytree(tiny_run[0], run_dir)
    push(run_dir, "user/xg", models=True)
    before = _heads(hub)
    hashes = {p.relative_to(run_dir).parent.as_posix(): json.loads(p.read_text())["hash"]
              for p in run_dir.rglob("manifest.json")}

    results = run(load_recipe(TINY_RECIPE, [*FAST, "refinement.iterations=3"]), run_dir, echo=lambda s: None)
    ran = [r.name for r in results if r.status == "done"]
    assert ran == [f"iter-3/{s}" for s in ("follower", "pseudo_ratings", "evaluator", "ratings", "kept")] + \
        ["diversified", "final"]
    for step, old in hashes.items():
        if step.startswith(("iter-1", "iter-2", "seed", "webtext", "baseline", "generator", "candidates")):
            assert json.loads((run_dir / step / "manifest.json").read_text())["hash"] == old, step

    summary = push(run_dir, "user/xg", iteration=3, models=True)
    after = _heads(hub)
    changed = {key for key in after if before.get(key) != after[key]}
    assert {branch for _, branch in changed} <= {"iter-3", "main"}
    assert ("user/xg", "iter-3") in changed and ("user/xg", "main") in changed
    assert ("user/xg-evaluator", "iter-3") in changed and ("user/xg-follower", "main") in changed
    assert ("user/xg-model", "main") in changed  # the final model was trained again
    assert ("user/xg-generator", "main") not in changed  # unchanged: no commit
    assert any(tag.startswith("iter-3-") for tag in hub.repos["user/xg-evaluator"].tags)
    assert summary["tags"] and all(t.startswith("iter-3-") for t in summary["tags"])
    again = push(run_dir, "user/xg", iteration=3, models=True)
    assert not any(r["new_commit"] for r in again["revisions"] + again["models"]) and _heads(hub) == after
