"""``xinstruct evaluate``: answers of a candidate and a baseline model, pairwise judging, zero-shot retention,
language fidelity and lm-eval benchmarks, written to ``results.json`` and ``report.md``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import languages
from ..inference import EngineConfig, GenerationParams, engine_config, make_engine
from ..prompts import MODES
from .answers import generate_answers
from .fidelity import language_fidelity
from .judge import JUDGE_SYSTEM, judge_pairs, summarize, zero_shot_retention
from .questions import paired_questions
from .report import write_report

logger = logging.getLogger(__name__)


@dataclass
class JudgeConfig:
    """An OpenAI-compatible judge: ``https://api.openai.com`` with ``token_env: OPENAI_API_KEY`` and
    ``model: gpt-4o``, or a local judge served by ``transformers serve``/vLLM/TGI."""

    base_url: str
    model: str
    token_env: str | None = None  # e.g. OPENAI_API_KEY; None sends no token
    concurrency: int = 8
    retries: int = 2
    max_new_tokens: int = 256


@dataclass
class EvalConfig:
    """What ``evaluate_models`` runs (see ``xinstruct evaluate --help``)."""

    candidate: str
    baseline: str | None = None
    languages: list[str] = field(default_factory=lambda: [lang.code for lang in languages.PAPER_LANGUAGES])
    questions: str = "builtin"
    limit: int | None = None
    modes: tuple[str, ...] = MODES
    max_new_tokens: int = 256
    engine: EngineConfig = field(default_factory=engine_config)
    judge: JudgeConfig | None = None
    harness: list[str] = field(default_factory=list)
    harness_data: dict[str, str] = field(default_factory=dict)
    harness_limit: int | None = None


def evaluate_models(cfg: EvalConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the evaluation into ``out_dir`` (answers are reused when complete; judge answers are replayed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for mode in cfg.modes:
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; use {', '.join(MODES)}.")
    questions = {code: paired_questions(cfg.questions, code, cfg.limit) for code in cfg.languages}
    params = GenerationParams(max_new_tokens=cfg.max_new_tokens, do_sample=False, seed=0)
    models = {"candidate": cfg.candidate, **({"baseline": cfg.baseline} if cfg.baseline else {})}
    answers: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for role, model in models.items():
        engine = make_engine(cfg.engine, model, out_dir / "requests" / role)
        for mode in cfg.modes:
            for code in cfg.languages:
                logger.info("answers: %s, %s, %s", role, mode, code)
                answers.setdefault(role, {}).setdefault(mode, {})[code] = generate_answers(
                    engine, questions[code], code, mode, model, params,
                    out_dir / "answers" / f"{role}.{mode}.{code}.jsonl")
        del engine
    results: dict[str, Any] = {
        "candidate": cfg.candidate, "baseline": cfg.baseline, "languages": cfg.languages, "modes": list(cfg.modes),
        "questions": cfg.questions, "questions_per_language": {c: len(q) for c, q in questions.items()},
        "judge": f"{cfg.judge.model} at {cfg.judge.base_url}" if cfg.judge else None,
        "language_fidelity": {
            role: {mode: {code: language_fidelity([a["output"] for a in rows], code)
                          for code, rows in per_lang.items()}
                   for mode, per_lang in per_mode.items()}
            for role, per_mode in answers.items()
        },
    }
    if cfg.judge and cfg.baseline:
        results.update(_judge(cfg, questions, answers, out_dir))
    if cfg.harness:
        from .harness import run_harness

        results["harness"] = run_harness(cfg.candidate, cfg.harness, cfg.languages, cfg.harness_data,
                                         cfg.harness_limit)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    write_report(results, out_dir)
    return results


def judge_generator(judge: JudgeConfig, requests_dir: Path):
    """The judge as ``generate(prompts, seed, temperature) -> outputs`` (what :func:`judge_pairs` calls) and its
    engine (for its ``stats``); answers are stored in ``requests_dir`` and replayed on a second run."""
    config = engine_config("endpoint", base_urls=[judge.base_url], model=judge.model, route="chat",
                           system_prompt=JUDGE_SYSTEM, concurrency=judge.concurrency, token_env=judge.token_env)
    engine = make_engine(config, judge.model, requests_dir)

    def generate(prompts: list[str], seed: int, temperature: float) -> list[str]:
        return engine.generate(prompts, GenerationParams(max_new_tokens=judge.max_new_tokens,
                                                          do_sample=temperature > 0,
                                                          temperature=temperature or 1.0, top_p=1.0, seed=seed))

    return generate, engine


def _judge(cfg: EvalConfig, questions, answers, out_dir: Path) -> dict[str, Any]:
    judge = cfg.judge
    generate, engine = judge_generator(judge, out_dir / "requests" / "judge")
    pairs = []
    for mode in cfg.modes:
        for code in cfg.languages:
            cand, base = answers["candidate"][mode][code], answers["baseline"][mode][code]
            for q, a, b in zip(questions[code], cand, base):
                pairs.append({"question_id": q["question_id"], "language": code,
                              "language_name": languages.get(code).name,
                              "mode": mode, "category": q["category"], "question": q["text"],
                              "candidate": a["output"], "baseline": b["output"]})
    judged = judge_pairs(generate, pairs, retries=judge.retries)
    with (out_dir / "judgments.jsonl").open("w", encoding="utf-8") as f:
        for r in judged:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    summary = summarize(judged)
    failed = sum(r.verdict == "failed" for r in judged)
    if failed:
        logger.warning("%d of %d pairs have no usable judge scores after %d retries (counted as failed)",
                       failed, len(judged), judge.retries)
    return {"pairwise": summary, "zero_shot_retention": zero_shot_retention(summary), "judge_stats": engine.stats}
