#!/usr/bin/env bash
# Every GPU check and timing in one call (the device machine is lent for minutes): the training strategies
# (DDP / FSDP / DeepSpeed ZeRO-2 / ZeRO-3 against one process, fp32 then bf16 + gradient checkpointing) and the
# elastic inference / training-step ratios at the 0.6B shape. Logs and JSON go to $OUT (default: runs/gpu).
#   bash bench/gpu.sh          # about 6 minutes on one H100 / H200
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
strategies="python3 bench/strategies.py --device cuda --nproc 1 --hidden 512 --layers 8 --steps 5"
timeout 200 $strategies --folder /tmp/s32 --json "$OUT/strategies_fp32.json" 2>&1 | tee "$OUT/strategies_fp32.log" | quiet | tail -12
timeout 200 $strategies --folder /tmp/s16 --json "$OUT/strategies_bf16.json" \
  --extra training.bf16=true training.gradient_checkpointing=true 2>&1 | tee "$OUT/strategies_bf16.log" | quiet | tail -12
timeout 150 python3 bench/gpu_elastic.py 2>&1 | tee "$OUT/gpu_elastic.log" | quiet
