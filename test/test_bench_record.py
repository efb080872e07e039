"""`mobile-vla bench-record` runs the real recorder_node over DDS and reports its figures
(briefly and at a small size here; the 720p figures come from the command, docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mobile_vla_ros.cli.main import main

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_frames.xml"


@pytest.mark.parametrize("compressed", [False, True])
def test_bench_record_reports_samples_drops_lag_and_cpu(tmp_path, compressed, capsys, monkeypatch):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)  # --dds-profile sets it for this process
    out = tmp_path / "figures.json"
    status = main(
        [
            "bench-record",
            "--width",
            "160",
            "--height",
            "120",
            "--seconds",
            "2",
            "--json",
            str(out),
            "--keep",
            str(tmp_path / "episodes"),
            *(["--compressed"] if compressed else ["--dds-profile", str(PROFILE)]),
        ]
    )
    figures = json.loads(out.read_text())
    assert figures["compressed"] == compressed and 18 <= figures["expected_samples"] <= 22
    assert figures["samples"] + figures["dropped"] >= figures["expected_samples"] - 1
    assert 0 < figures["camera_received"] <= figures["camera_published"]
    assert 0 < figures["lag_ms_p50"] <= figures["lag_ms_p99"] and figures["recorder_cpu_percent"] > 0
    assert 0 < figures["delivery_ms_p50"] <= figures["delivery_ms_p99"]
    assert status == (0 if figures["dropped"] == figures["lagged"] == 0 else 1)
    assert figures["rmw"] and figures["dds_profile"] == (None if compressed else str(PROFILE))
    assert len(list((tmp_path / "episodes").glob("*.h5"))) == 1
    text = capsys.readouterr().out
    for label in ("samples", "dropped", "lagged", "lag ", "delivery", "CPU", "dds"):
        assert f"\n{label}" in text


def test_bench_record_refuses_a_missing_dds_profile(tmp_path, capsys):
    assert main(["bench-record", "--seconds", "1", "--dds-profile", str(tmp_path / "missing.xml")]) == 2
    assert "missing.xml: no such file" in capsys.readouterr().out
