"""The generation stage end to end on the tiny recipe: outputs, skip on rerun, resume after a kill."""

import os
import signal
import subprocess
import sys
import time

import pytest
from datasets import load_from_disk

from conftest import REPO, write_jsonl
from xinstruct.config import load_recipe
from xinstruct.pipeline import run

TINY = REPO / "recipes" / "tiny.yaml"
FAST = ["languages=[sw,ta,th]", "candidates.shard_size=4", "generator.training.num_train_epochs=1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An uninterrupted run of the generation stage on three languages (reference for the resume test)."""
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    results = run(load_recipe(TINY, FAST), run_dir, echo=lambda s: None)
    return run_dir, results


def test_generation_writes_candidates_with_provenance(tiny_run):
    run_dir, results = tiny_run
    assert [r.name for r in results] == ["seed", "webtext", "generator", "candidates"]
    assert all(r.status == "done" for r in results)
    cands = load_from_disk(str(run_dir / "candidates" / "data"))
    for col in ("id", "language", "instruction", "output", "source", "generator", "english_confidence"):
        assert col in cands.column_names
    assert set(cands["language"]) <= {"sw", "ta", "th"}
    webtext = load_from_disk(str(run_dir / "webtext" / "data"))
    dropped = load_from_disk(str(run_dir / "candidates" / "dropped"))
    assert len(cands) + len(dropped) == len(webtext)  # every text is a candidate or a counted drop
    manifest = (run_dir / "candidates" / "manifest.json").read_text()
    assert '"rows_in"' in manifest and '"versions"' in manifest


def test_second_run_skips_every_finished_step(tiny_run):
    run_dir, _ = tiny_run
    again = run(load_recipe(TINY, FAST), run_dir, echo=lambda s: None)
    assert [r.status for r in again] == ["skipped"] * 4


def test_changed_decoding_reruns_only_candidates(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    again = run(load_recipe(TINY, FAST + ["candidates.decoding.temperature=1.0"]), copy, echo=lambda s: None)
    assert [r.status for r in again] == ["skipped", "skipped", "skipped", "done"]


def test_killed_candidate_generation_resumes_without_loss_or_repeat(tiny_run, tmp_path):
    reference_dir, _ = tiny_run
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "xinstruct.cli", "run", str(TINY), "--run-dir", str(run_dir)]
    for item in FAST:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    shards = run_dir / "candidates" / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if shards.exists() and len([p for p in shards.iterdir() if not p.name.endswith(".tmp")]) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = sorted(p.name for p in shards.iterdir() if not p.name.endswith(".tmp"))
    assert not (run_dir / "candidates" / "manifest.json").exists(), "the run finished before it was killed"
    assert 2 <= len(written)

    results = run(load_recipe(TINY, FAST), run_dir, echo=lambda s: None)
    assert [r.status for r in results] == ["skipped", "skipped", "skipped", "done"]
    resumed = load_from_disk(str(run_dir / "candidates" / "data")).to_list()
    reference = load_from_disk(str(reference_dir / "candidates" / "data")).to_list()
    ids = [r["id"] for r in resumed]
    assert len(ids) == len(set(ids))
    for r in resumed + reference:
        r.pop("generator")  # the path of the generator differs between the two run directories
    assert resumed == reference


def test_cli_reports_bad_recipe_key_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "xinstruct.cli", "run", str(TINY), "--set", "candidates.shard_sise=3", "--run-dir", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Unknown recipe key 'shard_sise'" in proc.stderr and "Traceback" not in proc.stderr


def test_empty_candidate_source_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "web" / "sw.jsonl", [{"text": "fupi"}])
    proc = subprocess.run(
        [sys.executable, "-m", "xinstruct.cli", "run", str(TINY), "--set", "languages=[sw]", "--set", f"data.webtext.path={tmp_path / 'web'}", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "Every web text was filtered out" in proc.stderr and "too_short" in proc.stderr
