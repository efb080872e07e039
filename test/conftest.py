"""Shared fixtures. ROS traffic of one test run stays on loopback in its own DDS domain, so
parallel runs on one machine never hear each other (mobile_vla_ros.ros_domain: the rule the demo
and the benches follow too; a ROS_DOMAIN_ID set outside is kept)."""

from __future__ import annotations

import os

from mobile_vla_ros.ros_domain import LOCALHOST_ONLY_ENV, claim_private_domain

if "ROS_DOMAIN_ID" not in os.environ:
    _DOMAIN = claim_private_domain()  # held for the whole session
    os.environ["ROS_DOMAIN_ID"] = str(_DOMAIN.domain_id)
for _name, _value in LOCALHOST_ONLY_ENV.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
# The tiny test models' tensors are too small for intra-op threads to pay off, and node tests run
# executor threads beside the policy: one torch thread per process avoids oversubscribing 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

LEFT_LINEAR_Y = 0.5
FORWARD_LINEAR_X = 0.3


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory):
    """A tiny Kosmos-2 saved with save_pretrained (the real loading code path)."""
    from mobile_vla_ros.policy.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_kosmos2"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_base_model, tmp_path_factory):
    """A policy checkpoint on the tiny base whose head was fitted so that the lab's 'left'
    instruction gives linear_y = +0.5 and 'right' gives -0.5 (linear_x = +0.3) on any frames."""
    import torch

    from mobile_vla_ros.policy.backbone import load_base_model
    from mobile_vla_ros.policy.checkpoint import save_policy
    from mobile_vla_ros.policy.config import HeadSettings, PolicyConfig
    from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
    from mobile_vla_ros.policy.model import VLAPolicy

    torch.manual_seed(0)
    instructions = (LAB_INSTRUCTIONS["left"], LAB_INSTRUCTIONS["right"])
    config = PolicyConfig(
        chunk_size=5,
        action_dt=0.1,
        instructions=instructions,
        head=HeadSettings(hidden_dim=32, lstm_layers=1),
    )
    policy = VLAPolicy(config, load_base_model(tiny_base_model))
    policy.normalizer.set_action_range((-1.15, -1.15), (1.15, 1.15))
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 4, 224, 224, 3), dtype=np.uint8))
    prompts = policy.encode_prompts(list(instructions))
    with torch.no_grad():
        features = [
            policy.frame_features(frames.flatten(0, 1), policy.encode_prompts([text]).repeat_frames(16))
            for text in instructions
        ]
    targets = torch.tensor([[FORWARD_LINEAR_X, LEFT_LINEAR_Y], [FORWARD_LINEAR_X, -LEFT_LINEAR_Y]])
    optimizer = torch.optim.Adam(policy.head.parameters(), lr=3e-3)
    policy.head.train()
    for step in range(150):
        loss = 0.0
        for side in range(2):
            window = features[side].view(4, 4, -1)[:, : 1 + step % 4]
            vector = policy.instruction_vector(prompts)[side : side + 1].expand(4, -1)
            predicted = policy.normalizer.unnormalize_actions(policy.predict(window, vector))
            loss = loss + (predicted - targets[side]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_policy(policy.eval(), tmp_path_factory.mktemp("tiny_policy"))


@pytest.fixture
def train_one_step(tiny_base_model):
    """`mobile-vla train` for one step of config/train_tiny.yaml on a data directory, without a
    validation split: does training accept these episodes, and what does its summary count?"""
    import json
    from pathlib import Path

    from mobile_vla_ros.cli.main import main

    config = Path(__file__).resolve().parents[1] / "config" / "train_tiny.yaml"

    def train(data, out) -> dict:
        arguments = ["train", "--data", str(data), "--base-model", str(tiny_base_model), "--out", str(out)]
        arguments += ["--config", str(config), "--max-steps", "1", "--set", "data.val_fraction=0"]
        assert main(arguments) == 0
        return json.loads((Path(out) / "training" / "summary.json").read_text())

    return train


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory):
    """`colcon build` of this checkout into a scratch workspace, once per test run (as on a robot)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    colcon = Path(sys.executable).with_name("colcon")
    colcon = str(colcon) if colcon.exists() else shutil.which("colcon")
    assert colcon, "colcon is part of the set-up (requirements-ros.txt or the ROS distribution)"
    root = tmp_path_factory.mktemp("ws")
    (root / "src").mkdir()
    (root / "src" / "mobile_vla_ros").symlink_to(Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [
            colcon,
            "--log-base",
            "log",
            "build",
            "--base-paths",
            "src",
            "--build-base",
            "build",
            "--install-base",
            "install",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "install"
