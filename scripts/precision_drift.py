"""How far does a run-time precision move the policy's actions from fp32's, next to fp32's own
error? The mean |action at DTYPE - action at fp32| per action over every frame of the episodes,
divided by fp32's mean error against the recorded actions. Unlike the training check's MAE
against the labels, this does not depend on how well the policy generalises, so a few validation
episodes can measure it (docs/results.md, "On a second CPU").

    python scripts/precision_drift.py POLICY BASE EPISODES_DIR [--dtypes bf16 fp16]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

from mobile_vla_ros.training.evaluate import evaluate


def rounded(values: np.ndarray, digits: int) -> list[float]:
    return [round(float(value), digits) for value in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policy")
    parser.add_argument("base_model")
    parser.add_argument("episodes")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    replays = {
        dtype: evaluate(args.policy, [args.episodes], args.base_model, device="cpu", dtype=dtype)[1]
        for dtype in ["fp32", *args.dtypes]
    }
    fp32 = np.concatenate([replay.predicted for replay in replays["fp32"]])
    error = np.abs(fp32 - np.concatenate([replay.true for replay in replays["fp32"]])).mean(axis=0)
    print(f"{len(fp32)} frames; fp32's mean error per action: {rounded(error, 4)}")
    for dtype in args.dtypes:
        drift = np.abs(np.concatenate([replay.predicted for replay in replays[dtype]]) - fp32).mean(axis=0)
        print(f"{dtype}: drift {rounded(drift, 4)}, drift / fp32's error {rounded(drift / error, 2)}")


if __name__ == "__main__":
    main()
