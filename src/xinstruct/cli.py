"""The ``xinstruct`` command line. Each command mirrors a Python function of the package."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from .cli_parser import build_parser


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
    from .publish.space import arena_variables, push_space

    variables = arena_variables(args.candidate, args.baseline, args.votes_repo, args.votes_every)
    result = push_space(args.repo, private=args.private, variables=variables, votes_repo=args.votes_repo)
    state = "new commit" if result["new_commit"] else "unchanged (no commit)"
    print(f"space {args.repo}: {state} {result['commit']}")
    if variables:
        print(f"variables set: {', '.join(result['variables'])}")
    else:
        print("Set XINSTRUCT_MODEL or XINSTRUCT_ENDPOINT in the Space's settings (or push with --candidate and "
              "--baseline for the arena).")
    if args.votes_repo:
        print(f"Add an HF_TOKEN secret with write access to {args.votes_repo} in the Space's settings: the votes are "
              "pushed with it.")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .errors import UsageError
    from .evaluation.harness import TASK_LANGUAGES
    from .evaluation.run import EvalConfig, JudgeConfig, evaluate_models
    from .inference import engine_config
    from .prompts import MODES
    from .rundir import RunDir

    if args.votes:
        return _evaluate_votes(args)
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
    for task, folder in data_dirs.items():
        if task != "xcopa":
            raise UsageError(f"--harness-data {task}=...: local data is supported for xcopa only.")
        if not Path(folder).is_dir():
            raise UsageError(f"--harness-data {task}={folder}: no such folder.")
    cfg = EvalConfig(candidate=model, baseline=baseline, questions=args.questions, limit=args.limit,
                     modes=modes, max_new_tokens=args.max_new_tokens, engine=engine, judge=judge,
                     harness=tasks, harness_data=data_dirs,
                     harness_limit=args.harness_limit, **({"languages": langs} if langs else {}))
    evaluate_models(cfg, out or "eval")
    print(f"report: {Path(out or 'eval') / 'report.md'}")
    return 0


def _evaluate_votes(args: argparse.Namespace) -> int:
    """``evaluate --votes``: win rates of arena votes (and a model judge's agreement on the same pairs)."""
    from .errors import UsageError
    from .evaluation.run import JudgeConfig, judge_generator
    from .evaluation.votes import judge_votes, load_votes, table_markdown, votes_table, write_votes_report

    if args.model or args.run or args.harness:
        raise UsageError("--votes reads arena votes; it does not take --model, --run or --harness.")
    if args.judge_url and not args.judge_model:
        raise UsageError("--judge-url needs --judge-model (the model name the judge server expects).")
    rows = load_votes(args.votes)
    out, judged = Path(args.out or "eval-votes"), None
    if args.judge_url:
        generate, _ = judge_generator(JudgeConfig(args.judge_url, args.judge_model, token_env=args.judge_token_env),
                                      out / "requests" / "judge")
        judged = judge_votes(rows, generate)
    table = votes_table(rows, judged)
    print(table_markdown(table))
    if args.out or judged is not None:
        print(f"report: {write_votes_report(table, out)}")
    return 0


def _plan_one(path: str, args: argparse.Namespace) -> dict:
    """:func:`xinstruct.costs.plan_costs` of one recipe with the command's options (probing it with ``--probe``)."""
    from .config_loader import load_recipe
    from .errors import RecipeError

    recipe = load_recipe(path, args.set)  # a recipe error stops here, before the stages (and torch) load
    from . import costs

    device = args.device or (costs.hardware_line(path) or (1, "h100-80gb"))[1]
    if device not in costs.DEVICES:
        raise RecipeError(f"--device {device!r}: use one of {', '.join(costs.DEVICES)}.")
    rates = costs.rates_from_run(args.run) if args.run else {}
    for key in ("webtext_kept", "gate_kept", "keep_rate"):
        if getattr(args, key) is not None:
            rates[key] = getattr(args, key)
    try:
        params = costs.model_params(recipe.base_model, args.params)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    speed = costs.throughput(device, params)
    speed = costs.Throughput(args.train_tps or speed.train, args.prefill_tps or speed.prefill,
                             args.decode_tps or speed.decode)
    rates_probed = None
    if args.probe:
        from .probe import probe

        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs: stdout is the plan's alone
            rates_probed = probe(recipe, args.probe_seconds)
    measured = costs.measured_seconds(args.run) if args.run else None
    return costs.plan_costs(recipe, device, rates, args.seeds_per_language, params, speed, rates_probed, measured)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .errors import UsageError

    if args.readme and not Path(args.readme).exists():
        raise UsageError(f"--readme {args.readme}: no such file.")
    plans = [_plan_one(path, args) for path in args.recipe]
    from . import costs  # after the recipes: a recipe error stops before the stages (and torch) load

    if args.readme:
        from .readme_blocks import fill_block

        if args.probe:  # the measured prediction, in the block of that name
            name, body = "probe", "\n\n".join(costs.format_costs(plan) for plan in plans)
        else:
            name, body = "plan", costs.plans_markdown(args.recipe, plans)
        options = " --probe" * args.probe + (f" --run {args.run}" if args.run else "") + \
            (f" --device {args.device}" if args.device else "")
        fill_block(args.readme, name, body, f"xinstruct plan {' '.join(args.recipe)}{options} --readme {args.readme}")
        print(f"updated the generated {name} block of {args.readme}")
    elif args.json:  # one recipe: its plan; several: a list
        print(json.dumps(plans[0] if len(plans) == 1 else plans, indent=2, default=str))
    else:
        print("\n\n".join(costs.format_costs(plan) for plan in plans))
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


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args.out, args.gemma_rows, args.skip_gemma)


COMMANDS = {"run": _cmd_run, "plan": _cmd_plan, "languages": _cmd_languages, "seed-build": _cmd_seed_build,
            "publish": _cmd_publish, "push": _cmd_push, "push-space": _cmd_push_space, "evaluate": _cmd_evaluate,
            "bench": _cmd_bench, "report": _cmd_report, "rate": _cmd_rate}


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
        return COMMANDS[args.command](args)
    except XInstructError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
