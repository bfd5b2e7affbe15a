"""Publishing: the dataset folder loads with `datasets` and trains a stock TRL trainer; cards; pushes to an
in-process fake Hub (revisions per iteration, tags, no-op re-push, the token never leaks)."""

import json
import logging

import pytest
import yaml
from datasets import load_dataset, load_from_disk
from fake_hub import SENTINEL
from huggingface_hub import DatasetCard, ModelCard

from xinstruct.errors import RunDirError
from xinstruct.publish import PublishError, build_dataset_repo, push, render_model_card
from xinstruct.rundir import RunDir


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


def _kept_table(text: str) -> dict[str, list[str]]:
    """The kept-per-language table after the report: language -> ``kept / rated`` per iteration."""
    lines = text[text.index("| language |"):].splitlines()
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:]
                                              if line.startswith("| "))}


def test_dataset_card_figures_are_the_run_report_as_is(repo_folder, tiny_run):
    """No figure in the dataset card is typed by hand: its quality section is ``report_markdown`` of the run byte for
    byte, prose without a digit around it, then the kept-per-language counts of the kept manifests."""
    from xinstruct.run_report import report_markdown

    run_dir = tiny_run[0]
    text = DatasetCard.load(repo_folder / "README.md").text
    markdown = report_markdown(run_dir)
    assert "Swap test on the real pool" in markdown and text.count(markdown) == 1
    section = text[text.index("## How well each role did its job"):text.index("## Plots")]
    before, after = section.split(markdown)
    prose = after[:after.index("| language |")]
    assert not any(ch.isdigit() for ch in before + prose.replace("iter-k", ""))
    table = _kept_table(after)
    for k in (1, 2):
        kept = json.loads((run_dir / f"iter-{k}" / "kept" / "manifest.json").read_text())
        assert {code: cells[k - 1] for code, cells in table.items()} == {
            code: f"{kept['rows_out_per_language'][code]} / {n}" for code, n in kept["rows_in_per_language"].items()}
    assert "accuracy per language" not in text and "rated 3" not in text  # the old hand-made lines are gone


def _refinement_claims(run_dir) -> list[str]:
    """What every card must say about how the run rated and kept its rows, read from the recipe and manifests."""
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())["refinement"]
    evaluator = json.loads((run_dir / "iter-1" / "evaluator" / "manifest.json").read_text())
    thresholds = [json.loads((run_dir / f"iter-{k}" / "ratings" / "manifest.json").read_text())["keep_threshold"]
                  for k in (1, 2)]
    claims = [f"K = {recipe['iterations']}", f"`{recipe['evaluator_kind']}`",
              f"`{recipe['keep_rule']}`: a row is kept when P(3)",
              f"cut to its first {recipe['response_tokens']} tokens",
              f"cross-fitted, {evaluator['folds']} folds" if evaluator["folds"] > 1 else "not cross-fitted"]
    if recipe["keep_rule"] == "recall":
        claims += [f"keeps {recipe['keep_recall']:g} (`refinement.keep_recall`)",
                   *(f"iteration {k}: {t:g}" for k, t in enumerate(thresholds, 1))]
    else:
        claims += [f"P(3) >= {t:g}" for t in thresholds]
    return claims


def test_cards_state_the_evaluator_keep_rule_and_response_window(repo_folder, tiny_run):
    """The dataset card's lineage and the cards of the models refinement made or fed (follower, evaluator, final) name
    the evaluator kind and its folds, the keep rule with the threshold each iteration applied (``iter-k/ratings``),
    the response window and K. (The generator's card does not: it comes before refinement and stays unchanged when
    the run grows by an iteration.)"""
    run_dir = tiny_run[0]
    claims = _refinement_claims(run_dir)
    assert "`likelihood`" in claims and "cross-fitted, 2 folds" in claims and "P(3) >= 0.3" in claims
    lineage = DatasetCard.load(repo_folder / "README.md").text.split("## Lineage")[1]
    texts = {"dataset lineage": lineage, **{role: render_model_card(run_dir, role, f"u/{role}").text
                                           for role in ("follower", "evaluator", "final")}}
    for where, text in texts.items():
        missing = [claim for claim in claims if claim not in text]
        assert not missing, (where, missing)
    assert "This repo holds fold 0's follower and rating head" in texts["evaluator"]
    assert "This iteration kept the rows with P(3) >= 0.3." in texts["evaluator"]


def test_the_cards_follow_the_run_not_the_template(tiny_run, tmp_path):
    """A run with another evaluator kind, keep rule, recall, thresholds and response window gets cards that say so:
    nothing of the tiny recipe's settings is written into the templates."""
    import shutil

    run_dir = tmp_path / "other"
    shutil.copytree(tiny_run[0], run_dir, ignore=shutil.ignore_patterns("model"))  # cards read no weights
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    recipe["refinement"].update(evaluator_kind="sft", keep_rule="recall", keep_recall=0.8, response_tokens=17)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    for k, threshold in ((1, 0.4242), (2, 0.4343)):
        for step, key, value in (("ratings", "keep_threshold", threshold), ("evaluator", "folds", 1)):
            path = run_dir / f"iter-{k}" / step / "manifest.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    claims = _refinement_claims(run_dir)
    assert {"`sft`", "not cross-fitted", "iteration 1: 0.4242", "cut to its first 17 tokens"} <= set(claims)
    card = DatasetCard.load(build_dataset_repo(run_dir, tmp_path / "published" / "x-instruction") / "README.md")
    texts = {"dataset card": card.text, **{role: render_model_card(run_dir, role, f"u/{role}").text
                                          for role in ("follower", "evaluator", "final")}}
    for where, text in texts.items():
        assert not [claim for claim in claims if claim not in text], where
        assert "`likelihood`" not in text and "first 32 tokens" not in text and "cross-fitted, 2" not in text, where
    evaluator = render_model_card(run_dir, "evaluator", "u/e", iteration=1)
    assert "This iteration kept the rows with P(3) >= 0.4242." in evaluator.text
    assert "### Rating:" in evaluator.text and "rating_head.json" not in evaluator.text  # an SFT evaluator


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
    # the tiny recipe's likelihood evaluator scores the response after the follower's prompt (not the rating prompt)
    markers = (("generator", "### English Instruction:"), ("evaluator", "### Response:"), ("final", "### Response:"))
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
    assert "### Rating:" not in evaluator.text  # the rating prompt is the SFT evaluator's, not this one's
    # how to apply it: the rate command, and by hand from the head the push uploads
    assert "`xinstruct rate RUN pairs.jsonl --iteration 2 --out rated.jsonl`" in evaluator.text
    assert "`rating_head.json`" in evaluator.text and "`generic_instruction` (`Write a text.`)" in evaluator.text
    metrics = [m for r in evaluator.data.to_dict()["model-index"] for res in r["results"] for m in res["metrics"]]
    assert {m["type"] for m in metrics} == {"accuracy", "roc_auc_3v1", "roc_auc_3v2", "swap_auc", "planted_drop_rate"}
    names = " ".join(m["name"] for m in metrics)
    assert "length-only" not in names and "PMI" not in names and "real rows" not in names  # references: table only


def _row(text: str, figure: str) -> list[str]:
    """The cells of the card table row of ``figure``."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {figure} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_each_iteration_figure_stands_next_to_its_reference(tiny_run):
    """The evaluator's swap AUC (real pool) sits next to the base model's PMI, the follower's relevance@1 next to the
    base model and chance, all as the run report has them; model-index holds the model's own value only."""
    from xinstruct.run_report import iteration_report

    run_dir = tiny_run[0]
    row = iteration_report(run_dir, 2)[-1]
    evaluator = render_model_card(run_dir, "evaluator", "u/e")
    swap, base = row["swap_auc"], row["swap_auc_base_pmi"]
    name, value, reference = _row(evaluator.text, "swap AUC of P(3), each candidate vs a swapped instruction")
    assert value == f"{swap['auc']:.2f} [{swap['low']:.2f}, {swap['high']:.2f}]"
    assert reference == f"base model PMI: {base['auc']:.2f} [{base['low']:.2f}, {base['high']:.2f}]"
    strongest = row["strongest_reference_3v1"]
    assert _row(evaluator.text, "AUC of P(3), 3 vs 1")[2] == f"strongest reference: {strongest['name']} " \
                                                            f"{strongest['auc']:.2f}"
    _, _, reference = _row(evaluator.text, "drop rate of planted negatives")
    assert reference.startswith(f"real rows: {row['drop_rates']['real']['rate']:.2f} [")
    own = {m["type"]: m["value"] for r in evaluator.data.to_dict()["model-index"] for res in r["results"]
           for m in res["metrics"]}
    assert own["swap_auc"] == swap["auc"] and own["planted_drop_rate"] == row["planted_drop_rate"]

    follower = render_model_card(run_dir, "follower", "u/f")
    rel, base_rel = row["follower_relevance"], row["base_relevance"]
    name, value, reference = _row(follower.text, "relevance@1 (chrF retrieval of its own gold response)")
    assert value.startswith(f"{rel['retrieval@1']:.2f}")
    assert reference.startswith(f"base model: {base_rel['retrieval@1']:.2f}")
    assert reference.endswith(f"chance: {rel['chance@1']:.2f}")
    own = {m["type"]: m["value"] for r in follower.data.to_dict()["model-index"] for res in r["results"]
           for m in res["metrics"]}
    assert own == {"language_fidelity": row["follower_fidelity"], "relevance_at_1": rel["retrieval@1"]}


def test_bad_input(tiny_run, tmp_path):
    with pytest.raises(RunDirError, match="no finished diversified step"):
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
    # a likelihood evaluator: the iteration's follower (cross-fitted: fold 0's) plus its rating head
    local = AutoModelForCausalLM.from_pretrained(RunDir(run_dir).model("follower", 2))
    assert "rating_head.json" in hub.files("user/xi-evaluator", "iter-2")
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), local.state_dict().values()))


def test_a_run_grown_by_one_iteration_reruns_nothing_and_pushes_only_what_is_new(hub, tiny_run, tmp_path):
    """``xinstruct run --set refinement.iterations=3`` on a finished K=2 run reuses iterations 1-2 (same manifest
    hashes, skipped), runs iteration 3, diversification and final tuning; ``push --iteration 3 --models`` then commits
    only on the new ``iter-3`` branches and on ``main``; the same push again commits nothing."""
    import shutil

    from conftest import FAST, TINY_RECIPE
    from xinstruct.config_loader import load_recipe
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
