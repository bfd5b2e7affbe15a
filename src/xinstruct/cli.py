"""The ``xinstruct`` command line. Each command mirrors a Python function of the package."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from .config_loader import load_recipe

    recipe = load_recipe(args.recipe, args.set)  # a recipe error stops here, before the stages (and torch) load
    from .pipeline import run
    from .run_report import format_iteration_report, format_run_summary, iteration_report, run_summary
    from .rundir import RunDir

    run_dir = Path(args.run_dir or Path("runs") / recipe.name)
    from .hardware import auto_dtype, cpu_kind

    print(f"CPU: {cpu_kind()}; dtype auto -> {auto_dtype()} (engine: {recipe.engine.dtype})")
    results = run(recipe, run_dir, until=args.until, start=args.start)
    report = iteration_report(run_dir, recipe.refinement.iterations)
    if report:
        print("\n" + format_iteration_report(report))
    summary = format_run_summary(run_summary(run_dir))
    if summary:
        print("\n" + summary)
    print(f"\nRun directory: {run_dir.resolve()}")
    for r in results:
        print(f"  {r.name:<22} {r.status:<8} {r.seconds:7.1f}s  {r.path}")
    final = RunDir(run_dir).model("final")
    if (final / "config.json").exists():
        print(f"\nX-Instruction model: {final.resolve()}")
    return 0


def _cmd_languages(args: argparse.Namespace) -> int:
    from .languages import PAPER_LANGUAGES

    print(f"{'code':<5} {'name':<11} {'script':<6} {'resource':<8} flores")
    for lang in PAPER_LANGUAGES:
        print(f"{lang.code:<5} {lang.name:<11} {lang.script:<6} {lang.resource:<8} {lang.flores}")
    return 0


def _cmd_seed_build(args: argparse.Namespace) -> int:
    from .data.seed_builder import build_seed_pairs

    out = build_seed_pairs(
        args.instructions, args.languages.split(","), args.model, args.out,
        batch_size=args.batch_size, limit=args.limit, max_new_tokens=args.max_new_tokens,
    )
    print(f"Wrote {out}")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .publish import build_dataset_repo

    out = build_dataset_repo(args.run_dir, args.out, license=args.license, pretty_name=args.pretty_name)
    print(f"Dataset repo folder: {out.resolve()}")
    print(f'Load it with: load_dataset("{out.name}", "sw")  (from {out.resolve().parent})')
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .publish import push

    summary = push(args.run_dir, args.repo, iteration=args.iteration, models=args.models, private=args.private)
    for r in summary["revisions"]:
        state = "new commit" if r["new_commit"] else "unchanged (no commit)"
        print(f"{args.repo}@{r['branch']}: {state} {r['commit']}")
    for tag in summary["tags"]:
        print(f"tag: {tag}")
    for m in summary["models"]:
        print(f"model {m['repo_id']}: {'new commit' if m['new_commit'] else 'unchanged (no commit)'}")
    return 0


def _cmd_push_space(args: argparse.Namespace) -> int:
    from .publish.space import push_space

    result = push_space(args.repo, private=args.private)
    state = "new commit" if result["new_commit"] else "unchanged (no commit)"
    print(f"space {args.repo}: {state} {result['commit']}")
    print("Set XINSTRUCT_MODEL or XINSTRUCT_ENDPOINT (and the HF_TOKEN secret) in the Space's settings.")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .errors import UsageError
    from .evaluation.harness import TASK_LANGUAGES
    from .evaluation.run import EvalConfig, JudgeConfig, evaluate_models
    from .inference import engine_config
    from .prompts import MODES
    from .rundir import RunDir

    model, baseline, langs, out = args.model, args.baseline, None, args.out
    if args.run:
        run = RunDir(args.run)
        recipe = run.recipe()
        model = model or str(run.model("final"))
        baseline = baseline or recipe["base_model"]
        langs = recipe["languages"]
        out = out or str(run.eval_results().parent)
    if not model:
        raise UsageError("Give --model (or --run RUN to evaluate RUN/final/model against its base model).")
    if args.languages:
        langs = [c.strip() for c in args.languages.split(",") if c.strip()]
    engine = engine_config("endpoint", base_urls=[args.engine_url]) if args.engine_url else engine_config()
    judge = JudgeConfig(args.judge_url, args.judge_model, token_env=args.judge_token_env) if args.judge_url else None
    if judge and not args.judge_model:
        raise UsageError("--judge-url needs --judge-model (the model name the judge server expects).")
    if judge and not baseline:
        raise UsageError("Pairwise judging compares against a baseline: give --baseline (or --run, whose base model "
                         "is the default).")
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    tasks = [t.strip() for t in (args.harness or "").split(",") if t.strip()]
    for value, allowed, what in ((modes, MODES, "--modes"), (tasks, tuple(TASK_LANGUAGES), "--harness")):
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise UsageError(f"{what}: unknown {', '.join(unknown)}; use {', '.join(allowed)}.")
    if any("=" not in item for item in args.harness_data):
        raise UsageError("--harness-data takes TASK=DIR, e.g. xcopa=../shared/data/xcopa.")
    data_dirs = dict(item.split("=", 1) for item in args.harness_data)
    cfg = EvalConfig(candidate=model, baseline=baseline, questions=args.questions, limit=args.limit,
                     modes=modes, max_new_tokens=args.max_new_tokens, engine=engine, judge=judge,
                     harness=tasks, harness_data=data_dirs,
                     harness_limit=args.harness_limit, **({"languages": langs} if langs else {}))
    evaluate_models(cfg, out or "eval")
    print(f"report: {Path(out or 'eval') / 'report.md'}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from .config_loader import load_recipe
    from .errors import RecipeError

    recipe = load_recipe(args.recipe, args.set)  # a recipe error stops here, before the stages (and torch) load
    from . import costs

    if args.device not in costs.DEVICES:
        raise RecipeError(f"--device {args.device!r}: use one of {', '.join(costs.DEVICES)}.")
    rates = costs.rates_from_run(args.run) if args.run else {}
    for key in ("webtext_kept", "gate_kept", "keep_rate"):
        if getattr(args, key) is not None:
            rates[key] = getattr(args, key)
    try:
        params = costs.model_params(recipe.base_model, args.params)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    speed = costs.throughput(args.device, params)
    speed = costs.Throughput(args.train_tps or speed.train, args.prefill_tps or speed.prefill,
                       args.decode_tps or speed.decode)
    rates_probed = None
    if args.probe:
        from .probe import probe

        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs: stdout is the plan's alone
            rates_probed = probe(recipe, args.probe_seconds)
    measured = costs.measured_seconds(args.run) if args.run else None
    plan = costs.plan_costs(recipe, args.device, rates, args.seeds_per_language, params, speed, rates_probed, measured)
    print(json.dumps(plan, indent=2, default=str) if args.json else costs.format_costs(plan))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .errors import UsageError
    from .run_report import report_markdown, update_readme
    from .rundir import RunDir

    run = RunDir(args.run)
    run.recipe()  # a folder that is not a run is a one-line error
    if args.readme:
        if not Path(args.readme).exists():
            raise UsageError(f"--readme {args.readme}: no such file.")
        update_readme(args.readme, run.path)
        print(f"updated the generated report block of {args.readme}")
    else:
        print(report_markdown(run.path))
    return 0


def _cmd_rate(args: argparse.Namespace) -> int:
    from .rate import rate_pairs, read_pairs

    rated, info = rate_pairs(args.run, read_pairs(args.pairs), args.iteration)
    rated.to_json(args.out, lines=True, force_ascii=False)
    print(f"rated {info['rows']} pairs with the {info['kind']} evaluator of iteration {info['iteration']} "
          f"({len(info['raters'])} rater(s)) -> {args.out}")
    return 0


def _add_quality_commands(sub) -> None:
    """``report`` and ``rate``: read a finished run's figures, or apply its evaluator to any pairs."""
    p = sub.add_parser("report", help="the quality report of a finished run (every figure next to its reference)")
    p.add_argument("run", help="run directory")
    p.add_argument("--markdown", action="store_true", help="Markdown tables (the default output format)")
    p.add_argument("--readme", metavar="FILE",
                   help="write the tables into FILE between '<!-- report:begin -->' and '<!-- report:end -->'")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("rate", help="rate (instruction, output, language) pairs with a run's evaluator",
                       description="Writes p1, p2, p3, expected_rating and rating per row, with the same code as "
                                   "the ratings step.")
    p.add_argument("run", help="a finished run directory")
    p.add_argument("pairs", help="JSONL file, one object per line with instruction, output, language")
    p.add_argument("--iteration", type=int, help="the iteration whose evaluator rates (default: the last)")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.set_defaults(func=_cmd_rate)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args.out, args.gemma_rows, args.skip_gemma)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``xinstruct`` (also used for ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="xinstruct",
        description="X-Instruction: cross-lingual instruction data (English instruction, native response) "
        "for low-resource languages.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run (or resume) a recipe",
                       description="Run or resume a recipe; finished steps are skipped.")
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/tiny.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set candidates.shard_size=32")
    p.add_argument("--run-dir", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--until",
                   help="stop after this stage (generation, refinement, diversification, tuning) or step (e.g. "
                        "candidates, iter-1/kept)")
    p.add_argument("--from", dest="start", help="run again from this stage or step; earlier steps must be finished")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("plan",
                       help="the cost of a recipe before running it: rows, tokens, hours, GPU-hours per step (loads "
                            "nothing, unless --probe measures this machine first)")
    p.add_argument("recipe", help="YAML recipe")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--device", default="h100-80gb", help="h100-80gb (default), a100-80gb, a100-40gb, l40s-48gb, "
                   "l4-24gb or cpu-2core (peak bf16 FLOP/s, memory bandwidth and memory of each: xinstruct.costs)")
    p.add_argument("--run", help="a finished run whose measured keep rates replace the defaults")
    p.add_argument("--webtext-kept", dest="webtext_kept", type=float,
                   help="share of web texts passing the filters (default 0.8)")
    p.add_argument("--gate-kept", dest="gate_kept", type=float,
                   help="share of candidates passing the gate (default 0.95)")
    p.add_argument("--keep-rate", dest="keep_rate", type=float,
                   help="share of rated rows kept per iteration (default 0.5)")
    p.add_argument("--seeds-per-language", type=int,
                   help="seed pairs per language (default: the limit, or 1000 for files)")
    p.add_argument("--params", type=float, help="model parameters (default: read from the model name)")
    p.add_argument("--train-tps", type=float, help="trained tokens/s per device (default: 40%% MFU of the bf16 peak)")
    p.add_argument("--prefill-tps", type=float, help="scored tokens/s per device (default: 50%% of the bf16 peak)")
    p.add_argument("--decode-tps", type=float,
                   help="generated tokens/s per device (default: memory-bound at batch 64)")
    p.add_argument("--probe", action="store_true",
                   help="measure this machine's load, decode, prefill and training rates on the recipe's own model "
                        "and batch sizes (about 2 minutes; loads the model) and predict every step from them")
    p.add_argument("--probe-seconds", type=float, default=120.0,
                   help="time budget of --probe; roles left when it runs out are priced from the datasheet")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (with --probe: predicted_seconds)")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("languages", help="list the built-in languages")
    p.set_defaults(func=_cmd_languages)

    p = sub.add_parser("seed-build",
                       help="make seed pairs by machine-translating an English instruction set's responses")
    p.add_argument("instructions",
                   help="JSONL/Parquet file or Hub dataset with instruction and output columns (English)")
    p.add_argument("--languages", required=True, help="comma-separated codes, e.g. sw,ta")
    p.add_argument("--model", default="facebook/nllb-200-distilled-600M",
                   help="seq2seq translation model (NLLB-style language codes)")
    p.add_argument("--out", required=True, help="output folder (one <code>.jsonl per language)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="translate at most this many pairs")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.set_defaults(func=_cmd_seed_build)

    p = sub.add_parser("publish", help="write the dataset repo folder (Parquet + card) of a finished run")
    p.add_argument("run_dir", help="run directory, e.g. runs/default")
    p.add_argument("--out", default="x-instruction",
                   help="output folder; load_dataset takes its name (default: x-instruction)")
    p.add_argument("--license", default="other", help="licence in the card (that of the web corpus)")
    p.add_argument("--pretty-name", default="X-Instruction")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser("push",
                       help="push a finished run to the Hub (a revision per iteration; token from HF_TOKEN or login)")
    p.add_argument("run_dir", help="run directory, e.g. runs/default")
    p.add_argument("--repo", required=True, help="dataset repo id, USER/x-instruction")
    p.add_argument("--iteration", type=int, help="push only this iteration's revisions (the last one also updates "
                   "main): after growing a run by one iteration, push just that")
    p.add_argument("--models", action="store_true", help="also push the models with cards: the follower and "
                   "evaluator of each iteration (branch iter-k), the generator and the final model")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("push-space", help="deploy the Gradio chat Space (space/ + the xinstruct package) to the Hub")
    p.add_argument("--repo", required=True, help="Space repo id, USER/x-instruction-chat")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_cmd_push_space)

    p = sub.add_parser("evaluate",
                       help="pairwise judging, zero-shot retention, language fidelity, lm-eval benchmarks; writes a "
                            "report")
    p.add_argument("--run",
                   help="a run directory: evaluate RUN/final/model against the recipe's base model, write RUN/eval")
    p.add_argument("--model", help="candidate model (path or Hub id)")
    p.add_argument("--baseline", help="baseline model (path or Hub id); needed for pairwise judging")
    p.add_argument("--languages", help="comma-separated codes (default: the run's, or the ten paper languages)")
    p.add_argument("--questions", default="builtin",
                   help="question set folder with <code>.jsonl files (default: the built-in 42 questions)")
    p.add_argument("--limit", type=int, help="at most this many questions per language")
    p.add_argument("--modes", default="cross-lingual,zero-shot", help="answer modes")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--engine-url",
                   help="answer through this OpenAI-compatible server instead of loading the models here "
                   "(it must load models by name, like transformers serve or a vLLM serving both; TGI ignores the "
                   "name)")
    p.add_argument("--judge-url", help="OpenAI-compatible judge, e.g. https://api.openai.com or http://127.0.0.1:8000")
    p.add_argument("--judge-model", help="judge model name, e.g. gpt-4o")
    p.add_argument("--judge-token-env",
                   help="environment variable with the judge's key, e.g. OPENAI_API_KEY (default: send no token)")
    p.add_argument("--harness", help="lm-eval benchmarks: any of xcopa,xnli,xstorycloze")
    p.add_argument("--harness-data", action="append", default=[], metavar="TASK=DIR",
                   help="local data for a benchmark, e.g. xcopa=../shared/data/xcopa")
    p.add_argument("--harness-limit", type=int, help="at most this many documents per benchmark task")
    p.add_argument("--out", help="output folder (default: RUN/eval or ./eval)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("bench", help="side-by-side benchmarks; prints ratios and writes JSON")
    p.add_argument("--out", default="bench.json", help="JSON results file")
    p.add_argument("--gemma-rows", type=int, default=16, help="rows for the Gemma-3-270M comparison")
    p.add_argument("--skip-gemma", action="store_true", help="only the tiny model")
    p.set_defaults(func=_cmd_bench)
    _add_quality_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xinstruct`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # one line per HTTP request is too much at INFO (endpoint engines send thousands)
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from .errors import XInstructError

    try:
        return args.func(args)
    except XInstructError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
