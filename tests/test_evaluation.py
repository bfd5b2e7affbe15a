"""Evaluation: the judge protocol on scripted outputs (both orders, the win/tie/loss rule, retries, failures,
retention), the built-in question set, language fidelity, the `evaluate` modules, lm-eval on local XCOPA,
and `xinstruct evaluate` end to end with a real `transformers serve` judge."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SHARED
from xinstruct.evaluation import (
    extract_scores,
    judge_pairs,
    load_questions,
    pair_verdict,
    summarize,
    zero_shot_retention,
)
from xinstruct.evaluation.fidelity import language_fidelity
from xinstruct.evaluation.judge import JUDGE_PROMPT, judge_prompt
from xinstruct.evaluation.questions import BUILTIN, paired_questions
from xinstruct.languages import PAPER_LANGUAGES

XCOPA = SHARED / "data" / "xcopa"
METRICS = REPO / "src" / "xinstruct" / "evaluation" / "metrics"


def scores(a, b):
    return f"<score1>{a}</score1>\n<score2>{b}</score2>"


def test_score_extraction():
    assert extract_scores("x <score1>8</score1> y <score2> 6.5 </score2>") == (8.0, 6.5)
    assert extract_scores("<score1>8</score1> only one") is None
    assert extract_scores(scores(11, 3)) is None  # outside 0-10
    assert extract_scores("") is None and extract_scores(None) is None


@pytest.mark.parametrize("candidate_first, baseline_first, verdict", [
    ((8, 5), (4, 7), "win"),    # wins in both orders
    ((8, 5), (6, 6), "win"),    # win + tie
    ((8, 5), (7, 4), "tie"),    # the judge prefers answer 1 whatever it is: position bias cancels
    ((5, 5), (5, 5), "tie"),
    ((3, 5), (5, 5), "loss"),
    ((2, 9), (9, 2), "loss"),
])
def test_both_orders_make_the_verdict(candidate_first, baseline_first, verdict):
    assert pair_verdict(candidate_first, baseline_first) == verdict


def test_judge_asks_both_orders_retries_missing_scores_and_counts_failures():
    calls = []
    script = {
        # question 1: clean win; question 2: first try unparseable, then a loss; question 3: never parseable
        ("q1", "cand"): [scores(9, 4)], ("q1", "base"): [scores(3, 8)],
        ("q2", "cand"): ["I think answer 1 is better.", scores(2, 7)], ("q2", "base"): [scores(8, 3)],
        ("q3", "cand"): ["no scores", "still none", "nope"], ("q3", "base"): [scores(5, 5)],
    }
    served = {k: 0 for k in script}

    def generate(prompts, seed, temperature):
        calls.append((len(prompts), seed, temperature))
        out = []
        for p in prompts:
            q = next(k for k in ("q1", "q2", "q3") if f"<question>\n{k}\n" in p)
            order = "cand" if p.index("CANDIDATE") < p.index("BASELINE") else "base"
            replies = script[(q, order)]
            out.append(replies[min(served[(q, order)], len(replies) - 1)])
            served[(q, order)] += 1
        return out

    pairs = [{"question_id": i, "language": "sw", "language_name": "Swahili", "mode": "cross-lingual", "category": "c",
              "question": q, "candidate": f"CANDIDATE {q}", "baseline": f"BASELINE {q}"}
             for i, q in enumerate(["q1", "q2", "q3"], 1)]
    results = judge_pairs(generate, pairs, retries=2)
    assert [r.verdict for r in results] == ["win", "loss", "failed"]
    assert calls == [(6, 0, 0.0), (2, 1, 0.7), (1, 2, 0.7)]  # greedy first, then sampled retries of the unparsed only
    assert results[1].attempts == 2 and results[2].attempts == 3 and results[2].candidate_first is None
    summary = summarize(results)["cross-lingual"]["sw"]
    assert summary == {"win": 1, "tie": 0, "loss": 1, "failed": 1, "pairs": 3, "judged": 2, "win_rate": 0.5,
                       "tie_rate": 0.0}


def test_zero_shot_retention_is_the_ratio_of_win_rates():
    summary = {"cross-lingual": {"sw": {"win_rate": 0.8}, "ta": {"win_rate": 0.0}, "all": {"win_rate": 0.5}},
               "zero-shot": {"sw": {"win_rate": 0.6}, "ta": {"win_rate": 0.3}, "all": {"win_rate": 0.45}}}
    assert zero_shot_retention(summary) == {"all": 0.9, "sw": 0.75, "ta": None}


def test_judge_prompt_is_the_authors():
    prompt = judge_prompt("Swahili", "Swali?", "Jibu 1", "Jibu 2")
    assert prompt.startswith("Given the question and the answer in Swahili language. "
                             "You are a helpful and precise assistant")
    assert ("<question>\nSwali?\n</question>\n<answer1>\nJibu 1\n</answer1>\n<answer2>\nJibu 2\n</answer2>\n\n"
            in prompt)
    assert JUDGE_PROMPT.endswith("do not output the justification and any other information.\n\n")


def test_builtin_questions_cover_every_language_with_the_same_ids():
    english = load_questions("builtin", "en")
    assert len(english) >= 40 and {q["category"] for q in english} >= {"writing", "knowledge", "reasoning", "advice",
                                                                       "culture"}
    for lang in PAPER_LANGUAGES:
        rows = paired_questions("builtin", lang.code)
        assert [r["question_id"] for r in rows] == [q["question_id"] for q in english]
        assert all(r["text"] != r["english"] for r in rows)
    assert (BUILTIN / "README.md").exists()


def test_language_fidelity_counts_answers_in_the_language():
    out = language_fidelity(["Habari ya asubuhi, rafiki yangu mpendwa. Leo ni siku nzuri sana.",
                             "Good morning my dear friend, today is a lovely day.", "  "], "sw")
    assert out["in_language"] == 1 and out["answers"] == 3 and out["fidelity"] == pytest.approx(1 / 3, abs=1e-4)
    assert out["detected"]["empty"] == 1 and out["detected"]["en"] == 1


def test_evaluate_modules_load_offline_by_path():
    import evaluate

    win_rate = evaluate.load(str(METRICS / "win_rate"))
    result = win_rate.compute(predictions=[scores(8, 5), "no scores", scores(3, 5)],
                              references=[scores(4, 7), scores(4, 7), scores(5, 5)])
    assert result == {"win_rate": 0.5, "tie_rate": 0.0, "loss_rate": 0.5, "wins": 1, "ties": 0, "losses": 1,
                      "failed": 1, "judged": 2}
    fidelity = evaluate.load(str(METRICS / "language_fidelity"))
    result = fidelity.compute(predictions=["Habari ya asubuhi, rafiki yangu mpendwa.",
                                           "Good morning, my dear friend."],
                              references=["sw", "sw"])
    assert result == {"fidelity": 0.5, "per_language": {"sw": 0.5}}


@pytest.mark.skipif(not XCOPA.exists(), reason=f"XCOPA not found at {XCOPA}")
def test_local_xcopa_through_lm_eval_on_the_tiny_model(tiny_model):
    from xinstruct.evaluation.harness import run_harness

    out = run_harness("tiny", ["xcopa"], ["sw", "th", "fi"], {"xcopa": str(XCOPA)}, limit=20)
    assert set(out["results"]["xcopa"]) == {"sw", "th"} and out["skipped_languages"] == {"xcopa": ["fi"]}
    for lang, m in out["results"]["xcopa"].items():
        assert m["task"] == f"xcopa_local_{lang}" and 0.0 <= m["acc"] <= 1.0 and m["acc_stderr"] > 0


def test_evaluate_end_to_end_with_a_served_judge(tiny_run, transformers_server, tmp_path):
    from xinstruct.publish import render_model_card

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0] / "final", run_dir / "final")
    shutil.copy(tiny_run[0] / "recipe.yaml", run_dir / "recipe.yaml")
    judge_model = str(tiny_run[0] / "final" / "model")
    args = [sys.executable, "-m", "xinstruct.cli", "evaluate", "--run", str(run_dir), "--languages", "sw,ta",
            "--limit", "3", "--max-new-tokens", "12", "--judge-url", transformers_server.url,
            "--judge-model", judge_model]
    if XCOPA.exists():
        args += ["--harness", "xcopa", "--harness-data", f"xcopa={XCOPA}", "--harness-limit", "10"]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # the judge is an HTTP endpoint
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    eval_dir = run_dir / "eval"
    results = json.loads((eval_dir / "results.json").read_text())
    assert results["baseline"] == "tiny" and results["candidate"].endswith("final/model")
    for mode in ("cross-lingual", "zero-shot"):
        for lang in ("sw", "ta"):
            s = results["pairwise"][mode][lang]
            assert s["pairs"] == 3 and s["win"] + s["tie"] + s["loss"] + s["failed"] == 3
    judgments = [json.loads(line) for line in (eval_dir / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 12 and all(j["verdict"] in ("win", "tie", "loss", "failed") for j in judgments)
    assert all((j["verdict"] == "failed") == (j["candidate_first"] is None or j["baseline_first"] is None)
               for j in judgments)
    assert results["judge_stats"]["answered"] >= 24  # two orders per pair, plus retries
    answers = (eval_dir / "answers" / "candidate.cross-lingual.sw.jsonl").read_text().splitlines()
    assert json.loads(answers[0])["prompt"].endswith("Answer in Swahili. \n\n### Response:")
    report = (eval_dir / "report.md").read_text()
    assert "| sw | cross-lingual |" in report and "Language fidelity" in report
    assert (eval_dir / "plots" / "win_rate.png").exists() and (eval_dir / "plots" / "language_fidelity.png").exists()
    if XCOPA.exists():
        assert "xcopa_local_sw" in report and set(results["harness"]["results"]["xcopa"]) == {"sw", "ta"}
    card = render_model_card(run_dir, "final", "someone/x-instruction-model")
    index = card.data.eval_results
    assert index and {e.metric_type for e in index} >= {"language_fidelity"}
    assert "language fidelity, cross-lingual, sw" in card.content
    # a second run reuses the stored answers and judge outputs: nothing is sent again
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((eval_dir / "results.json").read_text())["judge_stats"]["sent"] == 0


def test_evaluate_bad_input_is_a_clear_error(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "xinstruct.cli", "evaluate", *args], capture_output=True,
                              text=True, timeout=120)

    out = cli()
    assert out.returncode == 2 and "Give --model" in out.stderr
    out = cli("--model", "tiny", "--harness", "xcopa,mmlu")
    assert out.returncode == 2 and "--harness: unknown mmlu" in out.stderr
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "en.jsonl").write_text('{"question_id": 1, "text": "Hi?"}\n')
    (tmp_path / "qs" / "sw.jsonl").write_text('{"question_id": 1, "text": ""}\n')
    out = cli("--model", "tiny", "--languages", "sw", "--questions", str(tmp_path / "qs"),
              "--out", str(tmp_path / "e"))
    assert out.returncode == 2 and "question 1 needs question_id and a non-empty text" in out.stderr
    out = cli("--model", "tiny", "--languages", "ta", "--questions", str(tmp_path / "qs"),
              "--out", str(tmp_path / "e"))
    assert out.returncode == 2 and "No questions for 'ta'" in out.stderr and "Traceback" not in out.stderr
