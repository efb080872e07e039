"""Gathers the JSON files of scripts/gpu_check.sh into OUT_DIR/gpu_check.json and prints a short
table (the format is described in docs/performance.md, "GPU check").

    python scripts/gpu_check_summary.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHECKS = ("bench_bf16", "bench_fp16", "bench_drive", "bench_train")


def _figure(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def rows(results: dict) -> list[tuple[str, str]]:
    table = []
    for dtype in ("bf16", "fp16"):
        bench = results.get(f"bench_{dtype}")
        if bench is None:
            table.append((f"policy step {dtype}", "failed or missing"))
            continue
        text = f"cached {_figure(bench['cached_step_ms_p50'], ' ms')} p50, "
        text += f"{_figure(bench['cached_step_ms_p95'], ' ms')} p95"
        text += f"; peak CUDA {_figure(bench.get('peak_cuda_mb'), ' MB')}"
        if "onnxruntime_cached_step_ms_p50" in bench:
            text += f"; ONNX Runtime {_figure(bench['onnxruntime_cached_step_ms_p50'], ' ms')} p50"
        table.append((f"policy step {dtype}", text))
    drive = results.get("bench_drive")
    table.append(
        (
            "control loop, 60 s",
            "failed or missing"
            if drive is None
            else f"cmd_vel period p50 {_figure(drive['control_period_ms'].get('p50'), ' ms')}, "
            f"p99 {_figure(drive['control_period_ms'].get('p99'), ' ms')}",
        )
    )
    train = results.get("bench_train")
    table.append(
        (
            "LoRA training step",
            "failed or missing"
            if train is None
            else f"{_figure(train['step_s_p50'], ' s')} p50 ({train['settings']['batch_size']} clips), "
            f"peak CUDA {_figure(train.get('peak_cuda_mb'), ' MB')}, "
            f"{_figure(train['estimate']['hours_per_epoch'], ' h')} per epoch of the lab's data",
        )
    )
    return table


def main(out_dir: str) -> int:
    out = Path(out_dir)
    results = {
        name: json.loads((out / f"{name}.json").read_text()) for name in CHECKS if (out / f"{name}.json").is_file()
    }
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    for label, text in rows(results):
        print(f"{label:22s} {text}")
    print(f"written {out / 'gpu_check.json'}")
    return 0 if len(results) == len(CHECKS) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
