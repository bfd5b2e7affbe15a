#!/usr/bin/env bash
# One `transformers serve` for every role (CPU or GPU): pip install 'transformers[serving]'
#   recipes/serving/transformers-serve.sh [PORT]
# Unpinned, it loads the model each request names, so the pipeline can point every role at it and send
# the path of the model it just trained (the engine's default `model=`). --continuous-batching batches
# concurrent requests (measured 3.5x rows/s at concurrency 16 vs 1 on 2 CPU cores, tiny model: make bench).
# It returns no logprobs, so recipes keep the evaluator on a local engine.
set -euo pipefail
PORT=${1:-8000}
exec transformers serve --host 127.0.0.1 --port "$PORT" --continuous-batching
