"""The argument parser of ``xinstruct``: one function per group of commands. Each command's name is
``args.command``; :data:`xinstruct.cli.COMMANDS` maps it to the function that runs it."""

from __future__ import annotations

import argparse


def _add_run(sub) -> None:
    """``run``: run or resume a recipe."""
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


def _add_plan(sub) -> None:
    """``plan``: the cost of recipes before they run, from the datasheet or a probe."""
    p = sub.add_parser("plan",
                       help="the cost of a recipe before running it: rows, tokens, hours, GPU-hours per step (loads "
                            "nothing, unless --probe measures this machine first)")
    p.add_argument("recipe", nargs="+", help="YAML recipe(s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--device", help="h100-80gb, a100-80gb, a100-40gb, l40s-48gb, l4-24gb or cpu-2core (peak bf16 "
                   "FLOP/s, memory bandwidth and memory of each: xinstruct.costs); default: the device of the "
                   "recipe's '# Hardware: Nx DEVICE' line, else h100-80gb")
    p.add_argument("--readme", metavar="README",
                   help="write a table of the recipes, and each plan, into the file's <!-- plan:begin/end --> block "
                        "(with --probe: the measured plan, into its <!-- probe:begin/end --> block)")
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


def _add_data_commands(sub) -> None:
    """``languages`` and ``seed-build``."""
    p = sub.add_parser("languages", help="list the built-in languages")
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


def _add_publishing_commands(sub) -> None:
    """``publish``, ``push`` and ``push-space``."""
    p = sub.add_parser("publish", help="write the dataset repo folder (Parquet + card) of a finished run")
    p.add_argument("run_dir", help="run directory, e.g. runs/default")
    p.add_argument("--out", default="x-instruction",
                   help="output folder; load_dataset takes its name (default: x-instruction)")
    p.add_argument("--license", default="other", help="licence in the card (that of the web corpus)")
    p.add_argument("--pretty-name", default="X-Instruction")
    p = sub.add_parser("push",
                       help="push a finished run to the Hub (a revision per iteration; token from HF_TOKEN or login)")
    p.add_argument("run_dir", help="run directory, e.g. runs/default")
    p.add_argument("--repo", required=True, help="dataset repo id, USER/x-instruction")
    p.add_argument("--iteration", type=int, help="push only this iteration's revisions (the last one also updates "
                   "main): after growing a run by one iteration, push just that")
    p.add_argument("--models", action="store_true", help="also push the models with cards: the follower and "
                   "evaluator of each iteration (branch iter-k), the generator and the final model")
    p.add_argument("--private", action="store_true")
    p = sub.add_parser("push-space",
                       help="deploy the Gradio Space (chat and arena: space/ + the xinstruct package) to the Hub")
    p.add_argument("--repo", required=True, help="Space repo id, USER/x-instruction-chat")
    p.add_argument("--private", action="store_true")
    p.add_argument("--candidate", metavar="[NAME=]HUB_ID_OR_URL",
                   help="the arena's model under test (also the chat's model), e.g. x-instruction=USER/xi-final")
    p.add_argument("--baseline", metavar="[NAME=]HUB_ID_OR_URL",
                   help="the model it is compared with, e.g. base=google/gemma-3-270m")
    p.add_argument("--votes-repo", help="dataset repo that receives the votes (created private if missing)")
    p.add_argument("--votes-every", type=float, help="minutes between pushes of the votes (default 5)")


def _add_evaluate(sub) -> None:
    """``evaluate``: pairwise judging, zero-shot retention, fidelity, lm-eval benchmarks."""
    p = sub.add_parser("evaluate",
                       help="pairwise judging, zero-shot retention, language fidelity, lm-eval benchmarks; writes a "
                            "report")
    p.add_argument("--run",
                   help="a run directory: evaluate RUN/final/model against the recipe's base model, write RUN/eval")
    p.add_argument("--votes", metavar="REPO_OR_FOLDER",
                   help="win rates of arena votes (a votes dataset repo id or folder) per language and mode, with "
                        "bootstrap intervals; with --judge-url also the judge's agreement (Cohen's kappa) on the "
                        "same pairs")
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


def _add_bench(sub) -> None:
    """``bench``: side-by-side benchmarks."""
    p = sub.add_parser("bench", help="side-by-side benchmarks; prints ratios and writes JSON")
    p.add_argument("--out", default="bench.json", help="JSON results file")
    p.add_argument("--gemma-rows", type=int, default=16, help="rows for the Gemma-3-270M comparison")
    p.add_argument("--skip-gemma", action="store_true", help="only the tiny model")


def _add_quality_commands(sub) -> None:
    """``report`` and ``rate``: read a finished run's figures, or apply its evaluator to any pairs."""
    p = sub.add_parser("report", help="the quality report of a finished run (every figure next to its reference)")
    p.add_argument("run", help="run directory")
    p.add_argument("--markdown", action="store_true", help="Markdown tables (the default output format)")
    p.add_argument("--readme", metavar="FILE",
                   help="write the tables into FILE between '<!-- report:begin -->' and '<!-- report:end -->'")
    p = sub.add_parser("rate", help="rate (instruction, output, language) pairs with a run's evaluator",
                       description="Writes p1, p2, p3, expected_rating and rating per row, with the same code as "
                                   "the ratings step.")
    p.add_argument("run", help="a finished run directory")
    p.add_argument("pairs", help="JSONL file, one object per line with instruction, output, language")
    p.add_argument("--iteration", type=int, help="the iteration whose evaluator rates (default: the last)")
    p.add_argument("--out", required=True, help="output JSONL file")


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
    for add in (_add_run, _add_plan, _add_data_commands, _add_publishing_commands, _add_evaluate, _add_bench,
                _add_quality_commands):
        add(sub)
    return parser
