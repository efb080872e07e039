#!/usr/bin/env bash
# The package's checks on a CUDA GPU, one command (docs/performance.md, "GPU check"):
#   bash scripts/gpu_check.sh OUT_DIR
# On the full-size Kosmos-2 with random weights: the policy step at bf16 and fp16 (`mobile-vla
# bench`, with ONNX Runtime beside it when onnxruntime-gpu is installed), the control loop with the
# model running for 60 s (`bench-drive`) and a few steps of LoRA training (`bench-train`). Each
# writes OUT_DIR/<name>.json; OUT_DIR/gpu_check.json gathers them and a short table is printed.
# Needs a CUDA build of torch (the pinned torch==2.13.0 of requirements.txt is the CPU build: install
# the CUDA one for your driver first). About 10 minutes on a recent GPU.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: gpu_check.sh OUT_DIR}"
python="${PYTHON:-$repo/.venv/bin/python}"
mvla=("$python" -m mobile_vla_ros.cli.main)

if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA GPU is visible to torch ($("$python" -c 'import torch; print("torch", torch.__version__, "CUDA build:", torch.version.cuda)' 2>/dev/null || echo "torch not importable")); this check needs one" >&2
  exit 2
fi
mkdir -p "$out"
run() {  # name, command...: run one check, keep its log, go on when it fails
  local name="$1"; shift
  echo "== $name: $*"
  if "$@" >"$out/$name.log" 2>&1; then echo "   ok"; else echo "   FAILED (exit $?), see $out/$name.log"; fi
}
backend=pytorch
if "$python" -c 'import onnxruntime, sys; sys.exit(0 if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else 1)' 2>/dev/null; then
  backend=onnxruntime
else
  echo "   (onnxruntime has no CUDA provider here: install onnxruntime-gpu for the ONNX Runtime figures)"
fi
for dtype in bf16 fp16; do
  run "bench_$dtype" "${mvla[@]}" bench --base-model full-random --device cuda --dtype "$dtype" \
    --backend "$backend" --repeats 20 --json "$out/bench_$dtype.json"
done
run bench_drive "${mvla[@]}" bench-drive --base-model full-random --device cuda --seconds 60 \
  --json "$out/bench_drive.json"
run bench_train "${mvla[@]}" bench-train --base-model full-random --steps 5 --batch-size 2 \
  --set trainer.accelerator=gpu --set trainer.precision=bf16-mixed --workdir "$out/bench_train_work" \
  --json "$out/bench_train.json"
"$python" "$repo/scripts/gpu_check_summary.py" "$out"
