"""The ``xinstruct`` command line. Each command mirrors a Python function of the package."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_recipe
    from .pipeline import format_iteration_report, iteration_report, run

    recipe = load_recipe(args.recipe, args.set)
    run_dir = Path(args.run_dir or Path("runs") / recipe.name)
    results = run(recipe, run_dir, until=args.until, start=args.start)
    report = iteration_report(run_dir, recipe.refinement.iterations)
    if report:
        print("\nRefinement, per iteration:\n" + format_iteration_report(report))
    print(f"\nRun directory: {run_dir.resolve()}")
    for r in results:
        print(f"  {r.name:<22} {r.status:<8} {r.seconds:7.1f}s  {r.path}")
    final = run_dir / "final" / "model"
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
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run (or resume) a recipe", description="Run or resume a recipe; finished steps are skipped.")
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/tiny.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key, e.g. --set candidates.shard_size=32")
    p.add_argument("--run-dir", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--until", help="stop after this stage (generation, refinement, diversification, tuning) or step (e.g. candidates, iter-1/kept)")
    p.add_argument("--from", dest="start", help="run again from this stage or step; earlier steps must be finished")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("languages", help="list the built-in languages")
    p.set_defaults(func=_cmd_languages)

    p = sub.add_parser("seed-build", help="make seed pairs by machine-translating an English instruction set's responses")
    p.add_argument("instructions", help="JSONL/Parquet file or Hub dataset with instruction and output columns (English)")
    p.add_argument("--languages", required=True, help="comma-separated codes, e.g. sw,ta")
    p.add_argument("--model", default="facebook/nllb-200-distilled-600M", help="seq2seq translation model (NLLB-style language codes)")
    p.add_argument("--out", required=True, help="output folder (one <code>.jsonl per language)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="translate at most this many pairs")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.set_defaults(func=_cmd_seed_build)

    p = sub.add_parser("publish", help="write the dataset repo folder (Parquet + card) of a finished run")
    p.add_argument("run_dir", help="run directory, e.g. runs/default")
    p.add_argument("--out", default="x-instruction", help="output folder; load_dataset takes its name (default: x-instruction)")
    p.add_argument("--license", default="other", help="licence in the card (that of the web corpus)")
    p.add_argument("--pretty-name", default="X-Instruction")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser("push", help="push a finished run to the Hub (a revision per iteration; token from HF_TOKEN or login)")
    p.add_argument("run_dir", help="run directory, e.g. runs/default")
    p.add_argument("--repo", required=True, help="dataset repo id, USER/x-instruction")
    p.add_argument("--iteration", type=int, help="push only this iteration's revision")
    p.add_argument("--models", action="store_true", help="also push the generator, evaluator and final model with cards")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("push-space", help="deploy the Gradio chat Space (space/ + the xinstruct package) to the Hub")
    p.add_argument("--repo", required=True, help="Space repo id, USER/x-instruction-chat")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_cmd_push_space)

    p = sub.add_parser("bench", help="side-by-side benchmarks; prints ratios and writes JSON")
    p.add_argument("--out", default="bench.json", help="JSON results file")
    p.add_argument("--gemma-rows", type=int, default=16, help="rows for the Gemma-3-270M comparison")
    p.add_argument("--skip-gemma", action="store_true", help="only the tiny model")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xinstruct`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .config import RecipeError
    from .data.readers import DataError
    from .inference.endpoint import EndpointError
    from .languages import UnknownLanguageError
    from .publish import PublishError
    from .stages.generation import StageError

    try:
        return args.func(args)
    except (RecipeError, DataError, UnknownLanguageError, StageError, PublishError, EndpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
