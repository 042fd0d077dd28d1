#!/usr/bin/env bash
# Run a command inside the Vitis AI container with this checkout mounted at
# /workspace, e.g.
#   infra/vitis/run.sh dvc repro quantize@vitis_ptq
# The Vitis AI quantizers and compilers (pytorch_nndct, vai_q_tensorflow,
# vai_c_xir) and the runtime (xir, vart) are not on PyPI: they exist only in
# this container or on a board image. Override the image with VITIS_AI_IMAGE
# (e.g. a GPU build); VCK5000 hosts also pass their XRT devices through.
set -euo pipefail
image="${VITIS_AI_IMAGE:-xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.0.0.106}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
if ! command -v docker >/dev/null; then
  echo "error: docker is not installed; the Vitis AI toolchain runs in the $image container" >&2
  exit 2
fi
devices=()
for d in /dev/xclmgmt* /dev/dri/renderD*; do
  [ -e "$d" ] && devices+=(--device "$d:$d")
done
exec docker run --rm -it "${devices[@]}" \
  -v "$repo:/workspace" -w /workspace \
  -e DVC_NO_ANALYTICS=1 -e PREFECT_SERVER_ANALYTICS_ENABLED=false \
  "$image" bash -lc "conda activate vitis-ai-pytorch 2>/dev/null || true; pip install -q -e . && $*"
