"""scripts/gpu_check.sh: refuses clearly without a GPU; its summary reads what the commands write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mobile_vla_ros.cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="the refusal is for machines without a GPU; this one has one"
)
def test_gpu_check_refuses_without_a_gpu_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 2, done.stderr
    assert "no CUDA GPU is visible to torch" in done.stderr and "this check needs one" in done.stderr
    assert not out.exists()


@pytest.mark.ros
def test_gpu_check_summary_reads_the_commands_json(tiny_base_model, tmp_path):
    """The same commands gpu_check.sh runs, on the tiny model and the CPU: the summary must find
    every figure it prints in what they really write."""
    base = str(tiny_base_model)
    bench = ["bench", "--base-model", base, "--dtype", "fp32", "--repeats", "2"]
    assert main([*bench, "--json", str(tmp_path / "bench_bf16.json")]) == 0
    assert main([*bench, "--backend", "onnxruntime", "--json", str(tmp_path / "bench_fp16.json")]) == 0
    drive = ["bench-drive", "--base-model", base, "--dtype", "fp32", "--seconds", "3"]
    assert main([*drive, "--json", str(tmp_path / "bench_drive.json")]) == 0
    train = ["bench-train", "--base-model", base, "--steps", "2", "--pairs", "1", "--frames", "9"]
    assert main([*train, "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "bench_train.json")]) == 0
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check_summary.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "failed or missing" not in done.stdout and "ONNX Runtime" in done.stdout
    assert set(json.loads((tmp_path / "gpu_check.json").read_text())) == {
        "bench_bf16",
        "bench_fp16",
        "bench_drive",
        "bench_train",
    }
