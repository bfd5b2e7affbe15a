"""Win rates from arena votes: a planted vote file gives its known win rate (ties and both-bad half), shares, counts
and a bootstrap interval; rows that cannot count are skipped and counted; a model judge on the same pairs gives Cohen's
kappa; ``xinstruct evaluate --votes`` reads a folder and a (fake) Hub repo with ``load_dataset``."""

from __future__ import annotations

import json
import math
import random

import pytest

from conftest import REPO, write_jsonl
from xinstruct.cli import main
from xinstruct.data.readers import read_jsonl
from xinstruct.evaluation.votes import judge_votes, kappa, load_votes, table_markdown, votes_card, votes_table

# planted: (mode, language) -> outcomes of the candidate, and the win rate they must give (ties and both-bad half)
PLANTED = {
    ("cross-lingual", "sw"): (["win"] * 12 + ["tie"] * 4 + ["both_bad"] * 2 + ["loss"] * 6, (12 + 3) / 24),
    ("zero-shot", "ta"): (["win"] * 3 + ["both_bad"] * 1 + ["loss"] * 6, 3.5 / 10),
}


PLANTED_FILE = REPO / "tests" / "data" / "planted_votes" / "votes" / "votes-planted.jsonl"


def planted_votes(seed: int = 0) -> list[dict]:
    """Vote rows with the outcomes of PLANTED (A/B drawn at random, as the arena does), plus two rows that cannot
    count: an unknown verdict and a model outside the matchup. ``PLANTED_FILE`` holds them (``xinstruct evaluate
    --votes tests/data/planted_votes`` prints their table)."""
    rng, rows = random.Random(seed), []
    for (mode, lang), (outcomes, _) in PLANTED.items():
        for n, result in enumerate(outcomes):
            a_is_candidate = rng.random() < 0.5
            sides = {"win": "A" if a_is_candidate else "B", "loss": "B" if a_is_candidate else "A"}
            verdict = sides.get(result, result)
            rows.append({"time": "2026-12-04T10:00:00+00:00", "session_id": f"{lang}-s{n % 8}",
                         "pair_id": f"{lang}-{n}", "language": lang, "mode": mode, "instruction": f"question {n}",
                         "question_id": str(n) if n % 2 else None, "answer_a": f"{lang} answer {n} a",
                         "answer_b": f"{lang} answer {n} b", "model_a": "x-instruction" if a_is_candidate else "base",
                         "model_b": "base" if a_is_candidate else "x-instruction", "candidate": "x-instruction",
                         "baseline": "base", "verdict": verdict, "a_in_language": True if n % 3 == 0 else None,
                         "b_in_language": False if n % 4 == 0 else None, "max_new_tokens": 64})
    bad = dict(rows[0], pair_id="bad-1", verdict="C")
    stranger = dict(rows[1], pair_id="bad-2", model_a="someone-else")
    return rows + [bad, stranger]


def test_the_planted_vote_file_holds_the_planted_votes():
    assert list(read_jsonl(PLANTED_FILE)) == planted_votes()


@pytest.fixture
def vote_folder(tmp_path):
    rows = list(read_jsonl(PLANTED_FILE))
    write_jsonl(tmp_path / "votes" / "votes-1.jsonl", rows[:20])  # two files, as two Space processes write them
    write_jsonl(tmp_path / "votes" / "votes-2.jsonl", rows[20:])
    return tmp_path / "votes"


def _group(table, mode, lang):
    (matchup,) = table["matchups"]
    return next(g for g in matchup["groups"] if g["mode"] == mode and g["language"] == lang)


def test_planted_votes_give_their_known_win_rate_shares_and_interval(vote_folder):
    rows = load_votes(vote_folder)
    assert len(rows) == 36
    table = votes_table(rows)
    assert table["votes"] == 34 and table["skipped"] == {"verdict or models outside the matchup": 2}
    for (mode, lang), (outcomes, known) in PLANTED.items():
        g = _group(table, mode, lang)
        assert g["votes"] == len(outcomes) and g["win_rate"] == round(known, 4)
        for result in ("win", "tie", "both_bad", "loss"):
            assert g[result] == outcomes.count(result)
            assert g[f"{result}_share"] == round(outcomes.count(result) / len(outcomes), 4)
        # the bootstrap interval (over the 8 sessions) brackets the rate, about as wide as the normal approximation
        points = [{"win": 1, "loss": 0}.get(o, 0.5) for o in outcomes]
        sd = math.sqrt(sum((p - known) ** 2 for p in points) / len(points))
        half = 1.96 * sd / math.sqrt(len(points))
        assert g["sessions"] == 8 and g["low"] < known < g["high"]
        assert 0.5 < (g["high"] - g["low"]) / 2 / half < 2
    # the language check, per model: A said yes on every third vote, B said no on every fourth
    sw, pairs = _group(table, "cross-lingual", "sw"), [r for r in rows if r["language"] == "sw"][:24]
    for role in ("candidate", "baseline"):
        said = [r[f"{'a' if r['model_a'] == r[role] else 'b'}_in_language"] for r in pairs]
        said = [s for s in said if s is not None]
        assert sw[f"{role}_in_language"] == {"share": round(sum(said) / len(said), 4), "checked": len(said)}
    assert sw["candidate_in_language"]["checked"] + sw["baseline_in_language"]["checked"] == 8 + 6
    # one mode per language here, so no "all" row is added
    assert {(g["mode"], g["language"]) for g in table["matchups"][0]["groups"]} == set(PLANTED)
    text = table_markdown(table)
    assert "| cross-lingual | sw | 24 (8) | 50.0% | 16.7% | 8.3% | 25.0% | 62.5% |" in text
    assert "| zero-shot | ta | 10 (8) | 30.0% | 0.0% | 10.0% | 60.0% | 35.0% |" in text
    assert "2 (verdict or models outside the matchup)" in text


def test_evaluate_votes_prints_the_table_of_a_folder(vote_folder, tmp_path, capsys):
    assert main(["evaluate", "--votes", str(vote_folder), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| cross-lingual | sw | 24 (8) |" in out and "62.5%" in out and "35.0%" in out
    saved = json.loads((tmp_path / "out" / "votes.json").read_text())
    assert _group(saved, "cross-lingual", "sw")["win_rate"] == 0.625


def test_evaluate_votes_reads_a_hub_repo_with_load_dataset(hub, vote_folder, tmp_path, monkeypatch, capsys):
    import datasets.config
    import huggingface_hub.constants
    from huggingface_hub import HfApi

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    api = HfApi()
    api.create_repo("user/votes", repo_type="dataset")
    api.upload_folder(folder_path=str(vote_folder), path_in_repo="votes", repo_id="user/votes", repo_type="dataset")
    assert main(["evaluate", "--votes", "user/votes"]) == 0
    assert "| cross-lingual | sw | 24 (8) | 50.0% | 16.7% | 8.3% | 25.0% | 62.5% |" in capsys.readouterr().out


@pytest.mark.parametrize("source, message", [("nowhere/at/all", "not a folder of vote files nor a Hub dataset id"),
                                             ("empty", "No vote files in")])
def test_bad_vote_sources_are_one_line_errors(source, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    target = str(tmp_path / source) if source == "empty" else source
    assert main(["evaluate", "--votes", target]) == 2
    assert message in capsys.readouterr().err


def test_kappa_of_a_planted_judge_is_the_textbook_value():
    # 10 pairs: voters say win 5, loss 5; the judge agrees on 8 -> p_o = 0.8, p_e = 0.5*0.5 + 0.5*0.5 = 0.5,
    # kappa = (0.8 - 0.5) / (1 - 0.5) = 0.6
    human = ["win"] * 5 + ["loss"] * 5
    judge = ["win"] * 4 + ["loss"] + ["loss"] * 4 + ["win"]
    assert kappa(human, judge) == 0.6
    assert kappa(human, human) == 1.0
    assert kappa(["tie"] * 4, ["tie"] * 4) is None  # undefined: one label everywhere
    assert kappa(["both_bad", "win"], ["tie", "win"]) == 1.0  # both bad counts as a tie


def test_a_judge_on_the_same_pairs_gives_its_win_rate_and_agreement(vote_folder):
    """A scripted judge that agrees with the voters on every sw pair but one, judged in both orders."""
    from xinstruct.evaluation.votes import outcome

    rows = load_votes(vote_folder)
    wanted = {}  # candidate's answer text -> the verdict the judge should reach
    for row in rows:
        result = outcome(row)
        if result is None:
            continue
        verdict = "tie" if result == "both_bad" else result
        if row["pair_id"] == "sw-0":
            verdict = "loss" if verdict != "loss" else "win"  # the one disagreement
        wanted[row["answer_a" if row["model_a"] == row["candidate"] else "answer_b"]] = verdict

    def generate(prompts, seed, temperature):
        outputs = []
        for prompt in prompts:
            first = prompt.split("<answer1>\n")[1].split("\n</answer1>")[0]
            second = prompt.split("<answer2>\n")[1].split("\n</answer2>")[0]
            candidate_first = first in wanted
            verdict = wanted[first if candidate_first else second]
            high, low = (8, 3) if verdict == "win" else (3, 8) if verdict == "loss" else (5, 5)
            s1, s2 = (high, low) if candidate_first else (low, high)
            outputs.append(f"<score1>{s1}</score1><score2>{s2}</score2>")
        return outputs

    judged = judge_votes(rows, generate)
    assert len(judged) == 34 and set(judged.values()) <= {"win", "tie", "loss"}
    table = votes_table(rows, judged)
    sw = _group(table, "cross-lingual", "sw")
    # voters: win 12, tie 6 (both bad included), loss 6; the judge: win 11, tie 6, loss 7, agreeing on 23 of 24:
    # p_o = 23/24, p_e = (12*11 + 6*6 + 6*7) / 24**2 = 210/576, kappa = (p_o - p_e) / (1 - p_e) = 0.9344
    assert sw["judge"]["pairs"] == 24 and sw["judge"]["kappa"] == 0.9344
    assert sw["judge"]["win_rate"] == round((11 + 3) / 24, 4)
    assert _group(table, "zero-shot", "ta")["judge"]["kappa"] == 1.0
    assert "kappa (pairs)" in table_markdown(table)


def test_evaluate_votes_with_a_served_judge(vote_folder, tmp_path, capsys):
    """``--judge-url``: the judge is asked over HTTP (here a scripted server that always prefers answer 1: position
    bias, which the two orders cancel into ties)."""
    from serving import ModelServer

    server = ModelServer(text=lambda body: "<score1>9</score1><score2>2</score2>")
    try:
        assert main(["evaluate", "--votes", str(vote_folder), "--judge-url", server.url, "--judge-model", "judge",
                     "--out", str(tmp_path / "out")]) == 0
    finally:
        server.close()
    assert len(server.posts) == 2 * 34  # both orders of every counted pair
    saved = json.loads((tmp_path / "out" / "votes.json").read_text())
    sw = _group(saved, "cross-lingual", "sw")
    assert sw["judge"]["win_rate"] == 0.5 and sw["judge"]["pairs"] == 24  # all ties
    assert "judge win rate" in capsys.readouterr().out


def test_the_votes_card_lists_the_config_and_the_table(vote_folder):
    from huggingface_hub import DatasetCard

    rows = load_votes(vote_folder)
    card = DatasetCard(votes_card(rows, "user/votes"))
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train",
                                                                           "path": "votes/*.jsonl"}]}]
    assert set(card.data.language) == {"sw", "ta"}
    assert table_markdown(votes_table(rows)) in card.text


def test_a_group_with_few_votes_gets_no_interval():
    rows = [r for r in planted_votes() if r["pair_id"] in ("sw-0", "sw-1", "sw-20")]
    g = _group(votes_table(rows), "cross-lingual", "sw")
    assert g["votes"] == 3 and g["win_rate"] == round((2 + 0) / 3, 4)  # sw-0, sw-1 wins, sw-20 a loss
    assert g["low"] is None and "n/a (under 5 sessions)" in table_markdown(votes_table(rows))


def test_position_and_length_references_are_counted_over_decisive_votes():
    rows = [r for r in planted_votes() if r["language"] == "sw"][:24]
    for n, row in enumerate(rows):  # the chosen answer is the longer one in 3 of every 4 decisive votes
        chosen, other = ("answer_a", "answer_b") if row["verdict"] == "A" else ("answer_b", "answer_a")
        row[chosen], row[other] = ("long answer", "short") if n % 4 else ("short", "long answer")
    refs = votes_table(rows)["matchups"][0]["references"]
    decisive = [r for r in rows if r["verdict"] in ("A", "B")]
    assert refs["decisive"] == 18 == len(decisive)
    assert refs["chose_a"] == round(sum(r["verdict"] == "A" for r in decisive) / 18, 4)
    longer = sum(bool(n % 4) for n, r in enumerate(rows) if r["verdict"] in ("A", "B"))
    assert refs["chose_longer"] == round(longer / 18, 4) and refs["unequal_length"] == 18


def test_the_interval_resamples_sessions_so_one_voter_s_many_votes_do_not_narrow_it():
    """Five sessions of six votes each, every voter of one mind (three always prefer the candidate, two never): the
    30 votes carry the information of 5 voters, and the interval says so; resampled vote by vote it would be far
    narrower."""
    from xinstruct.evaluation.votes import win_rate_interval

    outcomes = ["win"] * 18 + ["loss"] * 12
    sessions = [f"s{n // 6}" for n in range(30)]
    by_session = win_rate_interval(outcomes, sessions)
    by_vote = win_rate_interval(outcomes)
    assert by_session["win_rate"] == by_vote["win_rate"] == 0.6
    assert by_session["high"] - by_session["low"] > 1.5 * (by_vote["high"] - by_vote["low"])
    assert win_rate_interval(outcomes, ["one voter"] * 30)["low"] is None  # one session: no interval
