#!/usr/bin/env bash
# Serve one trained role with Text Generation Inference (GPU, Docker).
#   recipes/serving/tgi.sh RUN_DIR ROLE_STEP PORT
#   e.g. recipes/serving/tgi.sh runs/gemma-7b-lora-tgi generator 8080
#        recipes/serving/tgi.sh runs/gemma-7b-lora-tgi iter-1/follower 8081
#        recipes/serving/tgi.sh runs/gemma-7b-lora-tgi iter-1/evaluator 8082
#        recipes/serving/tgi.sh runs/gemma-7b-lora-tgi final 8083
# The pipeline saves merged models (LoRA folded in), so TGI loads them as plain checkpoints.
# Limits: the stage prompts are a web text (<= 4000 chars, ~1500 tokens) plus the template; answers are
# <= 512 new tokens. Keep the engine's `concurrency` under --max-concurrent-requests (TGI answers 429 past it).
set -euo pipefail
RUN_DIR=${1:?run directory}; STEP=${2:?step folder, e.g. generator}; PORT=${3:-8080}
IMAGE=${TGI_IMAGE:-ghcr.io/huggingface/text-generation-inference:latest}
exec docker run --rm --gpus all --shm-size 1g -p "$PORT:80" -v "$(realpath "$RUN_DIR"):/run" \
  ${HF_TOKEN:+-e HF_TOKEN} "$IMAGE" \
  --model-id "/run/$STEP/model" \
  --max-concurrent-requests 128 \
  --max-input-tokens 3072 \
  --max-total-tokens 4096 \
  --max-batch-prefill-tokens 8192
