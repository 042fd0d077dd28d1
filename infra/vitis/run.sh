#!/usr/bin/env bash
# Quantize and compile a greenpipe Vitis bundle inside AMD's Vitis AI container:
#   greenpipe vitis-bundle models/denoise/checkpoint.pt artifacts/calib \
#       --arch infra/arch/DPUCZDX8G/ZCU104/arch.json --out artifacts/vitis/denoise-zcu104
#   infra/vitis/run.sh artifacts/vitis/denoise-zcu104 ptq        # or: fastft [--ft-samples N]; qat [--qat-steps N]; check
# The bundle is mounted at /bundle and its own vai_quantize.py runs there with
# the container's Python 3.8 and quantizer; nothing of greenpipe (Python 3.11,
# torch 2.13) is installed or needed inside. A PyTorch bundle runs in the
# PyTorch image (torch 1.13, vai_q_pytorch, vai_c_xir), a Keras bundle (the
# video recipe's TSM kernels) in the TensorFlow 2 image (TF 2.12,
# vai_q_tensorflow2, vai_c_tensorflow2). Results go to BUNDLE/out-<mode>/
# (quantized/, compiled/, report.json, the compiler's log); take the xmodel back
# with `greenpipe vitis-import BUNDLE MODE --out DIR`. Written against
# the Vitis AI 3.5 images below and never run against them yet; override the
# image with VITIS_AI_IMAGE (e.g. a GPU build, then pass --device cuda).
# VCK5000 hosts also get their XRT devices passed through.
set -euo pipefail
if [ $# -lt 2 ] || { [ "$2" != ptq ] && [ "$2" != fastft ] && [ "$2" != qat ] && [ "$2" != check ]; }; then
  echo "usage: $0 BUNDLE ptq|fastft|qat|check [vai_quantize.py options]  (BUNDLE: written by greenpipe vitis-bundle)" >&2
  exit 2
fi
bundle="$1"; mode="$2"; shift 2
if [ ! -f "$bundle/bundle.json" ] || [ ! -f "$bundle/vai_quantize.py" ]; then
  echo "error: $bundle is not a Vitis bundle (no bundle.json / vai_quantize.py); write it with greenpipe vitis-bundle" >&2
  exit 2
fi
bundle="$(cd "$bundle" && pwd)"
if grep -q '"framework": "keras"' "$bundle/bundle.json"; then
  image="${VITIS_AI_IMAGE:-xilinx/vitis-ai-tensorflow2-cpu:ubuntu2004-3.5.0.300}"; env=vitis-ai-tensorflow2
else
  image="${VITIS_AI_IMAGE:-xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306}"; env=vitis-ai-pytorch
fi
if ! command -v docker >/dev/null; then
  echo "error: docker is not installed; the Vitis AI quantizer and compiler run in the $image container" >&2
  exit 2
fi
if [ "$mode" = check ]; then args=(--check); else args=(--mode "$mode"); fi
devices=()
for d in /dev/xclmgmt* /dev/dri/renderD*; do
  [ -e "$d" ] && devices+=(--device "$d:$d")
done
# The conda env names are UG1414's (3.5, "Vitis AI Containers") for PyTorch and TensorFlow 2 flows.
exec docker run --rm ${devices[@]+"${devices[@]}"} -v "$bundle:/bundle" -w /bundle \
  -e UID="$(id -u)" -e GID="$(id -g)" -e VAI_ENV="$env" "$image" \
  bash -lc 'source /opt/vitis_ai/conda/etc/profile.d/conda.sh && conda activate "$VAI_ENV" && exec python /bundle/vai_quantize.py /bundle "$@"' \
  vai_quantize "${args[@]}" "$@"
