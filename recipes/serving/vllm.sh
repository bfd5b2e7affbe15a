#!/usr/bin/env bash
# Serve one trained role with vLLM (GPU): pip install vllm
#   recipes/serving/vllm.sh RUN_DIR ROLE_STEP PORT SERVED_NAME
#   e.g. recipes/serving/vllm.sh runs/llama-3-8b-lora-vllm generator 8000 xinstruct-generator
# The served name must equal the engine's `model:` in the recipe (vLLM answers 404 for any other).
set -euo pipefail
RUN_DIR=${1:?run directory}; STEP=${2:?step folder, e.g. generator}; PORT=${3:-8000}; NAME=${4:-xinstruct-${STEP//\//-}}
exec vllm serve "$RUN_DIR/$STEP/model" \
  --served-model-name "$NAME" \
  --host 0.0.0.0 --port "$PORT" \
  --max-model-len 4096 \
  --max-num-seqs 128 \
  --max-logprobs 20 \
  --generation-config vllm
