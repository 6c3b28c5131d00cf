#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): CPT MFU and tokens/s/GPU vs a bare loop, SFT padding-free vs padded,
# eval `letter` vs lm-eval, vLLM generation -- on one H100/H200 in <= 8 minutes.
#
#   bench/gpu_check.sh [--out DIR] [--steps N]    # on a GPU machine: makes .gpu-venv, installs, runs
#   bench/gpu_check.sh --dry-run                  # on CPU: the same code, tiny shapes, the existing .venv, no downloads
#
# The venv (GPU_CHECK_VENV, default <repo>/.gpu-venv) is made with --system-site-packages, so a machine
# whose image already has torch/CUDA reuses it; installs that fail (offline machine) are reported and
# the check runs with what imports. flash-attn and vLLM are optional: each gets a time limit.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
for a in "$@"; do [[ "$a" == "--dry-run" ]] && DRY=1; done
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled

if [[ $DRY == 1 ]]; then
  PY="${ASTROSAGE_PYTHON:-$REPO/.venv/bin/python}"
  [[ -x "$PY" ]] || { echo "dry run needs the project venv at $PY (make install)" >&2; exit 2; }
  exec "$PY" "$REPO/bench/gpu_check.py" "$@"
fi

VENV="${GPU_CHECK_VENV:-$REPO/.gpu-venv}"
T0=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
pip_try() {  # pip_try SECONDS ARGS...: install with a time limit; report, never fail the check
  local limit=$1; shift
  if timeout "$limit" "$PY" -m pip install -q --disable-pip-version-check "$@"; then echo "installed: $*"; else echo "NOT installed ($?): $*"; fi
}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  || pip_try 240 torch
pip_try 180 -e "$REPO[eval]"
"$PY" -c "import flash_attn" 2>/dev/null || pip_try 90 flash-attn --no-build-isolation
echo "setup took $((SECONDS - T0)) s"
"$PY" "$REPO/bench/gpu_check.py" --skip vllm "$@"
# vLLM pins its own torch: its own venv, its own process, only while the 8-minute budget allows
if [[ $((SECONDS - T0)) -lt 330 ]]; then
  VVENV="$VENV-vllm"
  [[ -x "$VVENV/bin/python" ]] || python3 -m venv --system-site-packages "$VVENV"
  PY="$VVENV/bin/python"
  "$PY" -c "import vllm" 2>/dev/null || pip_try 150 vllm
  "$PY" -c "import vllm" 2>/dev/null && PYTHONPATH="$REPO" "$PY" "$REPO/bench/gpu_check.py" --skip cpt sft eval "$@" \
    || echo "vllm: not measured (not installed)"
else
  echo "vllm: not measured (the 8-minute budget is spent)"
fi
echo "gpu check took $((SECONDS - T0)) s"
