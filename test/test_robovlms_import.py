"""`mobile-vla import-robovlms` on a synthetic RoboVLMs checkpoint: the tiny Kosmos-2 (weights
moved away from the tiny base) inside modules named like RoboVLMs' BaseRoboVLM, held by a real
Lightning module and written by Lightning's own `Trainer.save_checkpoint`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from mobile_vla_ros.cli.main import main
from mobile_vla_ros.errors import BaseModelMismatchError, UnsafeCheckpointError
from mobile_vla_ros.policy.backbone import fingerprint_base_model, load_base_model
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.robovlms_import import read_checkpoint
from mobile_vla_ros.training.synthetic import write_mirrored_dataset

SMALL_TRAINING = [
    "--set",
    "policy.head.hidden_dim=32",
    "--set",
    "policy.head.lstm_layers=1",
    "--set",
    "policy.lora.r=4",
    "--val-fraction",
    "0.5",
    "--set",
    "trainer.threads=1",
    "--max-steps",
    "2",
]
HEAD_KEYS = {
    "model.act_head.rnn.weight_ih_l0",
    "model.act_head.rnn.weight_hh_l0",
    "model.act_head.rnn.bias_ih_l0",
    "model.act_head.rnn.bias_hh_l0",
    "model.act_head.arm.weight",
    "model.act_head.arm.bias",
    "model.act_head.gripper.weight",
    "model.act_head.gripper.bias",
}


class RoboKosmos(nn.Module):
    """BaseRoboVLM's attribute names around the Kosmos-2: backbone, act_head, action_token."""

    def __init__(self, kosmos: nn.Module):
        super().__init__()
        width = kosmos.config.text_config.embed_dim
        self.backbone = kosmos
        self.action_token = nn.Parameter(torch.zeros(width))
        self.act_head = nn.ModuleDict(
            {"rnn": nn.LSTM(width, 16, batch_first=True), "arm": nn.Linear(16, 6), "gripper": nn.Linear(16, 1)}
        )  # 6-DOF arm + gripper


def make_robovlms_checkpoint(tiny_base_model, path):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import Kosmos2ForConditionalGeneration

    class RoboVlmTrainer(pl.LightningModule):  # RoboVLMs' Lightning module holds the policy as `model`
        def __init__(self, configs):
            super().__init__()
            self.save_hyperparameters(configs)
            kosmos = Kosmos2ForConditionalGeneration.from_pretrained(str(tiny_base_model))
            torch.manual_seed(1)
            with torch.no_grad():  # robot pretraining moved every weight
                for parameter in kosmos.parameters():
                    parameter.add_(torch.randn_like(parameter) * 0.05)
            # transformers < 4.31 saved this buffer; the importer must drop it by rule.
            embeddings = kosmos.vision_model.model.embeddings
            embeddings.register_buffer("position_ids", embeddings.position_ids.clone(), persistent=True)
            self.model = RoboKosmos(kosmos)

        def training_step(self, batch, _):
            return (self.model.action_token * batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.AdamW([self.model.action_token], lr=1e-3)

    module = RoboVlmTrainer({"model": "kosmos", "args": argparse.Namespace(seed=0, arm_dof=6)})
    width = module.model.action_token.numel()
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=str(path.parent),
    )
    trainer.fit(module, DataLoader(TensorDataset(torch.ones(1, width)), batch_size=1))
    trainer.save_checkpoint(str(path))
    return path, module.model.backbone


@pytest.fixture(scope="module")
def robovlms(tiny_base_model, tmp_path_factory):
    """(checkpoint path, the Kosmos-2 inside it)."""
    return make_robovlms_checkpoint(tiny_base_model, tmp_path_factory.mktemp("robovlms") / "kosmos_ph_tiny.pt")


@pytest.fixture(scope="module")
def imported(robovlms, tiny_base_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "kosmos-robovlms-tiny"
    assert main(["import-robovlms", str(robovlms[0]), "--out", str(out), "--base-model", str(tiny_base_model)]) == 0
    return out


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_keys_shows_each_prefix_with_its_rule(robovlms, capsys):
    code, out, _ = run_cli(capsys, "import-robovlms", str(robovlms[0]), "--list-keys")
    assert code == 0, out
    assert "PyTorch Lightning checkpoint (pytorch-lightning_version 2." in out
    assert "optimizer_states" in out and "hyper_parameters" in out
    layers = next(line for line in out.splitlines() if line.startswith("model.backbone.text_model.model.layers.*"))
    assert layers.split()[1] == "40" and "-> text_model.model.layers.*" in layers  # 2 layers x 20 tensors
    assert "dropped: RoboVLMs' 7-DOF" in next(line for line in out.splitlines() if line.startswith("model.act_head"))
    assert "0 tensors match no rule" in out


def test_import_accounts_for_every_tensor_and_writes_a_base_model(robovlms, imported, tiny_base_model, capsys):
    checkpoint, kosmos = robovlms
    report = json.loads((imported / "robovlms_import.json").read_text())
    source = read_checkpoint(checkpoint).state_dict
    # Mapped + tied + dropped is every tensor of the checkpoint, and nothing else.
    accounted = set(report["mapped"].values()) | set(report["tied"]) | {row["key"] for row in report["dropped"]}
    assert accounted == set(source) and len(accounted) == len(report["mapped"]) + len(report["tied"]) + len(
        report["dropped"]
    )
    assert {row["key"] for row in report["dropped"]} == HEAD_KEYS | {
        "model.action_token",
        "model.backbone.vision_model.model.embeddings.position_ids",
    }
    assert report["tied"] == {"model.backbone.text_model.lm_head.weight": "text_model.model.embed_tokens.weight"}

    record = json.loads((imported / "config.json").read_text())["imported_from"]
    assert record["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["checkpoint"] == "kosmos_ph_tiny.pt" and record["mapping"] == "robovlms-kosmos/1"
    assert record["run"]["global_step"] == 1 and record["rules"][0]["prefix"] == "model.backbone."
    assert {"tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"} <= {
        p.name for p in imported.iterdir()
    }

    # The folder loads through the normal base-model path and holds the checkpoint's weights.
    base = load_base_model(imported)
    expected = kosmos.state_dict()
    loaded = base.model.state_dict()
    assert set(loaded) == set(expected) - {"vision_model.model.embeddings.position_ids"}
    for name, tensor in loaded.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
    assert base.fingerprint != fingerprint_base_model(tiny_base_model)
    assert base.model.config.imported_from["sha256"] == record["sha256"]


def test_import_output_says_what_it_dropped(robovlms, tiny_base_model, tmp_path, capsys):
    code, out, _ = run_cli(
        capsys, "import-robovlms", str(robovlms[0]), "--out", str(tmp_path / "again"), "--base", str(tiny_base_model)
    )
    assert code == 0
    assert "unmapped    0" in out and "dropped     10 tensors" in out
    assert "model.act_head. (8): RoboVLMs' 7-DOF" in out and "    model.act_head.gripper.weight" in out
    assert "model.backbone.text_model.lm_head.weight: identical to text_model.model.embed_tokens.weight" in out
    assert f"fingerprint {fingerprint_base_model(tmp_path / 'again')}" in out
    # An existing output folder is never overwritten.
    code, _, err = run_cli(
        capsys, "import-robovlms", str(robovlms[0]), "--out", str(tmp_path / "again"), "--base", str(tiny_base_model)
    )
    assert code == 2 and "already exists" in err


@pytest.mark.ros
def test_policy_trained_on_the_import_names_it_and_refuses_another_base(imported, tiny_base_model, tmp_path):
    data = tmp_path / "data"
    write_mirrored_dataset(data, pairs=1, frames=9, size=48, seed=0)
    model = tmp_path / "policy"
    assert (
        main(["train", "--data", str(data), "--base-model", str(imported), "--out", str(model), *SMALL_TRAINING]) == 0
    )
    base = PolicyConfig.load(model).base_model
    record = json.loads((imported / "config.json").read_text())["imported_from"]
    assert base["fingerprint"] == fingerprint_base_model(imported)
    assert base["imported_from"] == {key: record[key] for key in ("checkpoint", "sha256", "mapping")}

    from mobile_vla_ros.policy.runner import PolicyRunner

    with pytest.raises(BaseModelMismatchError, match="kosmos-robovlms-tiny"):
        PolicyRunner.load(model, tiny_base_model, device="cpu")
    # The fingerprint covers the import record: same weights claiming another source are refused.
    relabelled = tmp_path / "relabelled"
    shutil.copytree(imported, relabelled)
    config = json.loads((relabelled / "config.json").read_text())
    config["imported_from"]["sha256"] = "0" * 64
    (relabelled / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelMismatchError):
        PolicyRunner.load(model, relabelled, device="cpu")
    drive_one_chunk(model, imported)


def drive_one_chunk(model_dir, base_dir):
    """The real inference_node on the imported base turns a window into a cmd_vel over DDS."""
    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from mobile_vla_ros.data.images import stack_window
    from mobile_vla_ros.nodes.inference_node import InferenceNode
    from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg

    context = rclpy.Context()
    rclpy.init(context=context)
    params = dict(
        model_dir=str(model_dir), base_model_dir=str(base_dir), device="cpu", start_enabled=True, max_accel=50.0
    )
    node = InferenceNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    harness = rclpy.create_node("import_test_harness", context=context)
    twists = []
    harness.create_subscription(Twist, "cmd_vel", twists.append, 10)
    window_pub = harness.create_publisher(Image, "window", 10)
    executor = SingleThreadedExecutor(context=context)
    for each in (node, harness):
        executor.add_node(each)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        frames = np.random.default_rng(0).integers(0, 256, (node.config.window_size, 224, 224, 3), dtype=np.uint8)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (node.status.counts["chunks"] and any(t.linear.y for t in twists)):
            window_pub.publish(rgb_to_image_msg(stack_window(frames), harness.get_clock().now().to_msg(), "camera"))
            time.sleep(0.1)
        assert node.status.counts["chunks"] > 0 and node.status.counts["faults"] == 0, node.status.counts
        assert any(t.linear.x or t.linear.y for t in twists)  # the policy's command reached cmd_vel
    finally:
        node.stop()
        executor.shutdown()
        spinner.join(5)
        node.destroy_node()
        harness.destroy_node()
        rclpy.try_shutdown(context=context)


class WritesMarker:
    """A pickle whose loading would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_unrun(container, tiny_base_model, tmp_path, capsys):
    marker, path, out = tmp_path / "ran", tmp_path / "kosmos_ph_oxe-pretrain.pt", tmp_path / "out"
    payload = {"state_dict": {"model.action_token": torch.zeros(4)}, "hyper_parameters": WritesMarker(marker)}
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    for argv in (["--out", str(out), "--base", str(tiny_base_model)], ["--list-keys"]):
        code, _, err = run_cli(capsys, "import-robovlms", str(path), *argv)
        assert code == 2 and "refused" in err and "nothing was loaded" in err, err
        assert ("posix.system" in err) == (container == "torch_zip")
    assert not marker.exists() and not out.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_the_weights_only_load_refuses_what_the_scan_would_miss(tmp_path, monkeypatch):
    """Second line of defence: with the opcode scan blinded, torch's weights-only unpickler still
    refuses the global, and nothing runs."""
    marker, path = tmp_path / "ran", tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {}, "hyper_parameters": WritesMarker(marker)}, path)
    monkeypatch.setattr(torch.serialization, "get_unsafe_globals_in_checkpoint", lambda _: [])
    with pytest.raises(UnsafeCheckpointError, match="posix.system.*nothing was loaded"):
        read_checkpoint(path)
    assert not marker.exists()


def test_unknown_foreign_or_misshapen_tensors_stop_the_import(robovlms, tiny_base_model, tmp_path, capsys):
    state = read_checkpoint(robovlms[0]).state_dict

    def attempt(changed: dict, *extra) -> tuple[int, str]:
        path = tmp_path / "variant.pt"
        torch.save(changed, path)  # a bare state dict is read as well as a Lightning checkpoint
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        code, _, err = run_cli(
            capsys, "import-robovlms", str(path), "--out", str(out), "--base", str(tiny_base_model), *extra
        )
        assert (code == 0) == out.exists()
        return code, err

    code, err = attempt({**state, "model.fwd_head.decoder.weight": torch.zeros(3, 3)})
    assert code == 2 and "1 tensors match no mapping rule (model.fwd_head.decoder.weight)" in err and "--drop" in err
    assert attempt({**state, "model.fwd_head.decoder.weight": torch.zeros(3, 3)}, "--drop", "model.fwd_head.")[0] == 0
    lora = "model.backbone.text_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    code, err = attempt({**state, lora: torch.zeros(4, 64)})
    assert code == 2 and "unmerged LoRA" in err and lora in err
    fc1 = "model.backbone.text_model.model.layers.1.ffn.fc1.weight"
    code, err = attempt({**state, fc1: torch.zeros(64, 64)})
    assert code == 2 and f"{fc1} (64, 64) != text_model.model.layers.1.ffn.fc1.weight (128, 64)" in err
    code, err = attempt({key: value for key, value in state.items() if "layers.1.ffn" not in key})
    assert code == 2 and "Kosmos-2 tensors are missing" in err
    embed = "model.backbone.text_model.lm_head.weight"
    code, err = attempt({**state, embed: state[embed] + 1})
    assert code == 2 and f"{embed} differs from model.backbone.text_model.model.embed_tokens.weight" in err
