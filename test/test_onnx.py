"""`mobile-vla export-onnx` and backend onnxruntime: the exported graph of the tiny Kosmos-2 run by
ONNX Runtime gives PyTorch's features and actions, and an export that does not fit is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mobile_vla_ros.cli.main import main
from mobile_vla_ros.errors import CheckpointError, SettingError
from mobile_vla_ros.policy.checkpoint import ADAPTER_FILE
from mobile_vla_ros.policy.onnx_encoder import EXPORT_FILE, TOLERANCE, check_onnx_settings
from mobile_vla_ros.policy.runner import PolicyRunner
from mobile_vla_ros.training.synthetic import write_mirrored_dataset


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tiny_base_model, tmp_path_factory):
    """The tiny policy exported into MODEL_DIR/onnx (the default place), checked on real episode frames."""
    model_dir = tmp_path_factory.mktemp("onnx_policy") / "policy"
    shutil.copytree(tiny_checkpoint, model_dir)
    episodes = tmp_path_factory.mktemp("onnx_episodes")
    write_mirrored_dataset(episodes, pairs=1, frames=10, size=224)
    assert (
        main(["export-onnx", "--model", str(model_dir), "--base-model", str(tiny_base_model), "--data", str(episodes)])
        == 0
    )
    return model_dir


def test_onnx_runtime_gives_pytorchs_actions_step_by_step(exported, tiny_base_model):
    record = json.loads((exported / "onnx" / EXPORT_FILE).read_text())
    assert record["check"]["passed"] and record["check"]["frames"] == 2 * (1 + 8)  # 2 instructions, 1 and 8 frames
    assert record["check"]["max_relative_difference"] <= TOLERANCE
    reference = PolicyRunner.load(exported, tiny_base_model, device="cpu", dtype="fp32")
    onnx = PolicyRunner.load(exported, tiny_base_model, device="cpu", dtype="auto", backend="onnxruntime")
    assert not any("kosmos" in name for name, _ in onnx.policy.named_modules())  # the PyTorch Kosmos-2 is gone
    frames = np.random.default_rng(4).integers(0, 256, (14, 224, 224, 3), dtype=np.uint8)
    for runner in (reference, onnx):
        runner.set_instruction(reference.config.instructions[0])
    for end in range(1, len(frames) + 1):
        if end == 9:  # an instruction switch on the way: a new prompt through the same graph
            for runner in (reference, onnx):
                runner.set_instruction(reference.config.instructions[1])
        window = frames[max(0, end - 8) : end]
        expected, found = reference.step(window), onnx.step(window)
        np.testing.assert_allclose(found, expected, atol=1e-4, err_msg=f"step {end}")
        assert onnx.last_familiarity == pytest.approx(reference.last_familiarity, rel=1e-3)
        assert onnx.last_timing.frames_encoded == 1  # the same feature cache: one new frame per step
    assert np.sign(expected[0, 1]) == -1  # the right instruction steers right in both


def test_an_export_that_does_not_fit_is_refused_before_anything_loads(exported, tiny_base_model, tmp_path):
    with pytest.raises(SettingError, match="dtype auto or fp32"):
        check_onnx_settings(exported, None, "bf16", "none")
    with pytest.raises(SettingError, match="quantize none"):
        check_onnx_settings(exported, None, "fp32", "int8")
    with pytest.raises(CheckpointError, match="no ONNX export in .*export-onnx"):
        check_onnx_settings(exported, tmp_path / "nothing", "auto", "none")
    # The same graph beside another training run's adapter: refused, not run with the wrong weights.
    retrained = tmp_path / "retrained"
    shutil.copytree(exported, retrained)
    adapter = load_file(retrained / ADAPTER_FILE)
    name = next(name for name in adapter if "lora_B" in name)
    adapter[name] = adapter[name] + torch.full_like(adapter[name], 0.01)
    save_file(adapter, retrained / ADAPTER_FILE)
    with pytest.raises(CheckpointError, match="made from another policy"):
        PolicyRunner.load(retrained, tiny_base_model, device="cpu", backend="onnxruntime")
    # An export whose check failed is not used either.
    record = json.loads((exported / "onnx" / EXPORT_FILE).read_text())
    failed = tmp_path / "failed"
    shutil.copytree(exported / "onnx", failed)
    (failed / EXPORT_FILE).write_text(json.dumps({**record, "check": {**record["check"], "passed": False}}))
    with pytest.raises(CheckpointError, match="did not pass its check"):
        check_onnx_settings(exported, failed, "auto", "none")
