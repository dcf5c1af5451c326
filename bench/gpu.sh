#!/usr/bin/env bash
# Every GPU check and timing in one call (the device machine is lent for minutes): the training strategies
# (DDP / FSDP / DeepSpeed ZeRO-2 / ZeRO-3 against one process, fp32 then bf16 + gradient checkpointing), the
# elastic inference / training-step ratios at the 0.6B shape, and vLLM serving a compat export (`dimensions=`
# against our encode(dim=), throughput). Logs and JSON go to $OUT (default: runs/gpu).
#   bash bench/gpu.sh                          # about 6 minutes on one H100 / H200, plus about 5 for vLLM
#   ONLY=vllm bash bench/gpu.sh                # one part: strategies, elastic or vllm
#   VLLM_PYTHON=/opt/vllm/bin/python bash bench/gpu.sh   # vLLM from its own environment (it pins its own torch)
# vLLM: $VLLM_PYTHON, else a python3 that imports vllm, else (with network) `pip install vllm` into /tmp/vllm-venv
# when VLLM_INSTALL=1; without any of them the vLLM step prints SKIPPED.
# Packages missing on the machine travel as wheels in .whl/ (see bench/README.md).
set -o pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, accelerate, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | tail -1
quiet() { grep -v -E "Loading weights|Writing model|it/s\]|^\s*$"; }
part() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }
strategies="python3 bench/strategies.py --device cuda --nproc 1 --hidden 512 --layers 8 --steps 5"
if part strategies; then
  timeout 200 $strategies --folder /tmp/s32 --json "$OUT/strategies_fp32.json" 2>&1 | tee "$OUT/strategies_fp32.log" | quiet | tail -12
  timeout 200 $strategies --folder /tmp/s16 --json "$OUT/strategies_bf16.json" \
    --extra training.bf16=true training.gradient_checkpointing=true 2>&1 | tee "$OUT/strategies_bf16.log" | quiet | tail -12
fi
part elastic && timeout 150 python3 bench/gpu_elastic.py 2>&1 | tee "$OUT/gpu_elastic.log" | quiet
if part vllm; then
  if [ -z "${VLLM_PYTHON:-}" ] && ! python3 -c "import vllm" 2>/dev/null && [ "${VLLM_INSTALL:-0}" = 1 ]; then
    python3 -m venv /tmp/vllm-venv && /tmp/vllm-venv/bin/pip install -q vllm && VLLM_PYTHON=/tmp/vllm-venv/bin/python
  fi
  timeout 900 python3 bench/gpu_vllm.py ${VLLM_PYTHON:+--vllm-python "$VLLM_PYTHON"} --json "$OUT/vllm.json" 2>&1 \
    | tee "$OUT/vllm.log" | quiet | tail -80
fi
