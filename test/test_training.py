"""Training and evaluation end to end through the `mobile-vla` command, on a tiny Kosmos-2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mobile_vla_ros.cli.main import main
from mobile_vla_ros.policy.checkpoint import NORMALIZATION_FILE, WEIGHT_FILES
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
from mobile_vla_ros.training.config import TrainConfig, TrainConfigError, load_train_config
from mobile_vla_ros.training.metrics import BLIND_WARNING
from mobile_vla_ros.training.synthetic import write_mirrored_dataset

# A small head and a high learning rate: the tiny model must learn within seconds on 2 cores.
SMALL = [
    "--set",
    "policy.head.hidden_dim=64",
    "--set",
    "policy.head.lstm_layers=1",
    "--set",
    "policy.head.dropout=0",
    "--learning-rate",
    "3e-3",
    "--val-fraction",
    "0.25",
    "--set",
    "trainer.threads=1",
]


def action_range(model_dir) -> tuple[list[float], list[float]]:
    tensors = load_file(model_dir / NORMALIZATION_FILE)
    return tensors["action_low"].tolist(), tensors["action_high"].tolist()


def train(data, base, out, *extra) -> int:
    return main(["train", "--data", str(data), "--base-model", str(base), "--out", str(out), *SMALL, *extra])


@pytest.fixture(scope="module")
def mirrored_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirrored")
    write_mirrored_dataset(root / "train", pairs=4, frames=12, size=64, seed=0)
    write_mirrored_dataset(root / "heldout", pairs=2, frames=12, size=64, seed=1)
    return root


def test_trained_policy_follows_its_instruction_on_held_out_episodes(mirrored_data, tiny_base_model, tmp_path, capsys):
    """Left and right episodes share their frames, so only the instruction tells the way. A policy
    that ignores it predicts the same linear_y for both: separation 0 and, on one of the two
    instructions, a sign accuracy of at most 0.5. Both bars below are out of its reach."""
    model = tmp_path / "model"
    assert train(mirrored_data / "train", tiny_base_model, model, "--max-steps", "40") == 0
    summary = json.loads((model / "training" / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["windows_per_second"] > 0
    assert summary["instruction_separation"] > 0.5  # on the validation episodes, computed at the end of training
    config = PolicyConfig.load(model)
    assert config.action_dt == pytest.approx(0.1) and set(config.instructions) == set(LAB_INSTRUCTIONS.values())
    assert config.training["steps"] == 40 and config.training["instruction_separation"] is not None
    assert config.camera == {"rotate_180": False, "color_order": "rgb", "resize": "squash"}  # from the episodes
    low, high = action_range(model)
    assert (
        low[0] == 0.0 and low[1] == pytest.approx(-high[1]) and 0.6 < high[1] <= 0.8 + 1e-6
    )  # mirrored |linear_y| 0.2..0.8

    report_path, png = tmp_path / "eval.json", tmp_path / "eval.png"
    code = main(
        [
            "eval",
            "--threads",
            "1",
            "--model",
            str(model),
            "--base-model",
            str(tiny_base_model),
            "--data",
            str(mirrored_data / "heldout"),
            "--json",
            str(report_path),
            "--png",
            str(png),
        ]
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    assert {"mae", "sign_accuracy", "instruction_separation", "feature_cosine"} <= set(report)
    print(json.dumps({k: report[k] for k in ("sign_accuracy", "instruction_separation", "feature_cosine", "mae")}))
    assert report["instruction_separation"] >= 0.5
    assert set(report["sign_accuracy"]) == set(LAB_INSTRUCTIONS.values())
    assert all(accuracy >= 0.9 for accuracy in report["sign_accuracy"].values())
    # Closer to the recorded sideways speeds than standing still sideways (the images' part of
    # the speed is not expected of 40 steps on 3 scenes: README, "Train and evaluate").
    from mobile_vla_ros.data.episode import list_episodes, read_episode

    still = np.mean([np.abs(read_episode(p).actions[:, 1]).mean() for p in list_episodes(mirrored_data / "heldout")])
    assert all(mae["linear_y"] < 0.75 * still for mae in report["mae"].values()), still
    assert -1.0 <= report["feature_cosine"] <= 1.0
    assert png.stat().st_size > 10_000
    printed = capsys.readouterr().out  # the training summary, then eval's table
    assert "instruction separation" in printed and re.search(
        r"MAE linear_x [\d.]+, linear_y [\d.]+, image-blind", printed
    )


def test_tiny_config_policy_reads_where_the_box_is_on_held_out_twins_at_every_precision(tiny_base_model, tmp_path):
    """Issues 12 and 23's acceptance check, smaller (8 pairs, 300 steps instead of 24 and 1500):
    the sideways speed follows where the box is, so an image-blind policy cannot beat the best
    constant per instruction (mae_vs_blind >= 1 by construction), at fp32 and at the bf16 and fp16
    the robot runs (`eval` replays at all three by default). fp32 and fp16 within the tolerance of
    fp32; bf16 keeps its instruction and its eyes (before issue 23's fix: 1.33x-1.86x blind) but
    not yet within that tolerance on every CPU (here 0.76x against fp32's 0.61x on an Intel CPU
    with AMX, within it on an AMD EPYC; the full twins miss it on both, docs/results.md), so its
    bound is the image-blind warning."""
    write_mirrored_dataset(tmp_path / "train", pairs=8, frames=18, size=64, seed=0)
    write_mirrored_dataset(tmp_path / "heldout", pairs=4, frames=18, size=64, seed=1)
    write_mirrored_dataset(tmp_path / "darker", pairs=4, frames=18, size=64, seed=1, shift="half-light")
    config = Path(__file__).resolve().parents[1] / "config" / "train_tiny.yaml"
    model, report_path = tmp_path / "model", tmp_path / "eval.json"
    args = ["--config", str(config), "--max-steps", "300", "--set", "data.val_fraction=0.25"]
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "train"),
                "--base-model",
                str(tiny_base_model),
                "--out",
                str(model),
                *args,
            ]
        )
        == 0
    )
    eval_args = ["--model", str(model), "--base-model", str(tiny_base_model), "--threads", "1"]
    assert main(["eval", *eval_args, "--data", str(tmp_path / "heldout"), "--json", str(report_path)]) == 0
    evaluated = json.loads(report_path.read_text())
    assert sorted(evaluated["by_dtype"]) == ["bf16", "fp16", "fp32"]
    for dtype, report in evaluated["by_dtype"].items():
        assert report["instruction_separation"] >= 0.8, (dtype, report["instruction_separation"])
        assert all(accuracy >= 0.95 for accuracy in report["sign_accuracy"].values()), (dtype, report)
        bound = BLIND_WARNING if dtype == "bf16" else 0.7
        assert all(ratio < bound for ratio in report["mae_vs_blind"].values()), (dtype, report["mae_vs_blind"])
        assert all(value > 0.5 for value in report["frame_sensitivity"].values()), (dtype, report)
    checks = evaluated["precision_checks"]
    assert checks["fp32"]["passed"] and checks["fp16"]["passed"], checks
    assert checks["fp16"]["action_drift"] < checks["bf16"]["action_drift"], checks  # fp16 rounds 8x finer
    trained = json.loads((model / "policy.json").read_text())["precision_checks"]
    assert all(trained[dtype]["action_drift"] >= 0 for dtype in ("bf16", "fp16")), trained
    # Issue 25: the familiarity thresholds calibrated on the validation frames pass held-out frames of
    # the same room and flag the same episodes at half the light.
    for dtype, report in evaluated["by_dtype"].items():
        assert report["familiarity"]["share_above"]["p99"] <= 0.05, (dtype, report["familiarity"])
    darker_path = tmp_path / "darker.json"
    assert main(["eval", *eval_args, "--data", str(tmp_path / "darker"), "--json", str(darker_path)]) == 0
    for dtype, report in json.loads(darker_path.read_text())["by_dtype"].items():
        assert report["familiarity"]["share_above"]["p99.9"] >= 0.9, (dtype, report["familiarity"])


def test_resumed_run_ends_where_an_uninterrupted_run_ends(mirrored_data, tiny_base_model, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(mirrored_data / "train", tiny_base_model, straight, "--max-steps", "9") == 0
    # Stop in the middle of the second epoch (6 steps per epoch), then continue to the same step.
    assert train(mirrored_data / "train", tiny_base_model, resumed, "--max-steps", "4") == 0
    assert (resumed / "training" / "checkpoints" / "last.ckpt").read_bytes()[8:9] == b"{"  # safetensors, not a pickle
    assert main(["train", "--out", str(resumed), "--resume", "--max-steps", "9"]) == 0
    for name in WEIGHT_FILES:
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-5, err_msg=f"{name}:{key}")
    first = json.loads((straight / "training" / "summary.json").read_text())
    second = json.loads((resumed / "training" / "summary.json").read_text())
    assert second["steps"] == first["steps"] == 9
    assert second["train_loss"] == pytest.approx(first["train_loss"], abs=1e-5)
    assert len(list((resumed / "training" / "logs").iterdir())) == 2  # the first part's metrics are kept

    # Without --resume an existing run is never overwritten; a resume may not change the data.
    assert train(mirrored_data / "train", tiny_base_model, resumed, "--max-steps", "2") == 2
    assert main(["train", "--out", str(resumed), "--resume", "--learning-rate", "1e-2"]) == 2


def test_legacy_layout_trains_end_to_end_and_bad_episodes_are_counted(tiny_base_model, tmp_path, capsys):
    data = tmp_path / "lab"
    write_mirrored_dataset(data, pairs=2, frames=9, size=48, legacy=True)
    (data / "episode_20250101_999999_broken_left.h5").write_bytes(b"\x89HDF\r\n garbage")
    write_mirrored_dataset(tmp_path / "short", pairs=1, frames=4, size=48, legacy=True)
    for path in (tmp_path / "short").iterdir():
        path.rename(data / ("short_" + path.name))
    model = tmp_path / "model"
    assert train(data, tiny_base_model, model, "--max-steps", "2") == 0
    summary = json.loads((model / "training" / "summary.json").read_text())
    assert summary["episodes"]["found"] == 7 and summary["episodes"]["skipped"] == 3
    assert PolicyConfig.load(model).action_dt == pytest.approx(0.4)  # one key press of the lab's robot
    assert PolicyConfig.load(model).camera["rotate_180"] is None  # the lab's files do not say
    assert "3 of 7 skipped" in capsys.readouterr().out

    from mobile_vla_ros.policy.runner import PolicyRunner

    runner = PolicyRunner.load(model, tiny_base_model, device="cpu")
    runner.set_instruction("left")
    assert runner.step(np.zeros((8, 224, 224, 3), np.uint8)).shape == (10, 2)


def test_empty_dataset_is_a_clear_error(tiny_base_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train(tmp_path / "empty", tiny_base_model, tmp_path / "model") == 2
    assert "no usable episodes" in capsys.readouterr().err
    assert not (tmp_path / "model" / "policy.json").exists()


def test_config_file_matches_built_in_defaults_and_rejects_unknown_keys(tmp_path):
    from pathlib import Path

    shipped = yaml.safe_load((Path(__file__).parents[1] / "config" / "train.yaml").read_text())
    defaults = TrainConfig().to_dict()

    def check(section: dict, reference: dict, where=""):
        for key, value in section.items():
            if isinstance(value, dict):
                check(value, reference[key], f"{where}{key}.")
            else:
                assert value == reference[key], f"config/train.yaml {where}{key} differs from the built-in default"

    check(shipped, defaults)
    custom = tmp_path / "custom.yaml"
    custom.write_text("optim: {learning_rate: 3.0e-4}\npolicy: {lora: {r: 8}}\n")
    config = load_train_config(custom, ["trainer.max_steps=5", "data.mirror=false"])
    assert (config.optim.learning_rate, config.policy.lora.r, config.trainer.max_steps, config.data.mirror) == (
        3e-4,
        8,
        5,
        False,
    )
    with pytest.raises(TrainConfigError, match="unknown training setting 'optim.lr'"):
        load_train_config(None, ["optim.lr=1"])
    with pytest.raises(TrainConfigError, match="must be of type int"):
        load_train_config(None, ["trainer.max_steps=lots"])
    # The policy section is the policy's own PolicyConfig; what the episodes decide cannot be set.
    assert isinstance(config.policy, PolicyConfig)
    with pytest.raises(TrainConfigError, match="unknown training setting 'policy.action_dt'"):
        load_train_config(None, ["policy.action_dt=0.2"])


def write_corrections(directory, episodes: int, person_y: float, seed: int = 3) -> None:
    """Takeovers recorded through the real recorder path: 0.5 s of the policy going left, then a
    person steering with linear_y = person_y for 1.5 s."""
    from mobile_vla_ros.control.corrections import CorrectionRecorder, CorrectionSettings, Sample
    from mobile_vla_ros.data.correction_episodes import CORRECTION_ATTR, CORRECTION_COLUMNS
    from mobile_vla_ros.data.episode_writer import EpisodeWriter
    from mobile_vla_ros.training.synthetic import pair_frames

    rng = np.random.default_rng(seed)

    def open_episode():
        return EpisodeWriter(
            directory, LAB_INSTRUCTIONS["left"], 10.0, extra_columns=CORRECTION_COLUMNS, **{CORRECTION_ATTR: True}
        )

    recorder = CorrectionRecorder(CorrectionSettings(context_s=0.5, end_hold_s=0.2), 0.1, open_episode)
    for index in range(episodes):
        images, _ = pair_frames(rng, 22, 64)
        for t, image in enumerate(images):
            human = 5 <= t < 20
            action = np.array([0.3, person_y if human else 0.5])
            stamp_ns = index * 100_000_000_000 + t * 100_000_000  # 0.1 s apart, episodes 100 s apart
            recorder.on_sample(Sample(image, stamp_ns, action, np.array([0.3, 0.5]), human))
    assert len(recorder.saved) == episodes


def test_fine_tuning_on_corrections_continues_the_policy_and_moves_it_toward_the_person(
    mirrored_data, tiny_base_model, tiny_checkpoint, tmp_path
):
    """`train --init-from POLICY --data ORIGINAL --data CORRECTIONS`: the tiny policy drives left
    (linear_y +0.5); a person corrected it to -0.3 on frames of this kind. After a short fine-tune the
    policy's left output on those frames has moved toward the person, its action range is kept and
    policy.json lists the corrections it learned from."""
    from mobile_vla_ros.data.episode import list_episodes, read_episode
    from mobile_vla_ros.policy.runner import PolicyRunner

    corrections = tmp_path / "corrections"
    write_corrections(corrections, episodes=3, person_y=-0.3)
    from mobile_vla_ros.data.images import resize_for_model

    frames = np.stack(
        [resize_for_model(image, 224) for image in read_episode(list_episodes(corrections)[0]).images[5:13]]
    )

    def left_y(model) -> float:
        runner = PolicyRunner.load(model, tiny_base_model, device="cpu")
        runner.set_instruction("left")
        return float(runner.step(frames)[0, 1])

    model = tmp_path / "corrected"
    code = train(
        mirrored_data / "train",
        tiny_base_model,
        model,
        "--data",
        str(corrections),
        "--init-from",
        str(tiny_checkpoint),
        "--max-steps",
        "30",
        "--val-fraction",
        "0",
        "--set",
        "data.correction_weight=4",
    )
    assert code == 0
    before, after = left_y(tiny_checkpoint), left_y(model)
    print(f"left linear_y on corrected frames: before {before:.3f}, after {after:.3f}")
    assert after < before - 0.2
    config, initial = PolicyConfig.load(model), PolicyConfig.load(tiny_checkpoint)
    assert action_range(model) == action_range(tiny_checkpoint)
    assert config.chunk_size == initial.chunk_size == 5  # the policy's, not config/train.yaml's 10
    assert config.training["init_from"] == str(tiny_checkpoint.resolve())
    assert sorted(config.training["correction_episodes"]) == [str(p) for p in list_episodes(corrections)]
    summary = json.loads((model / "training" / "summary.json").read_text())
    assert summary["episodes"]["corrections"] == 3


def test_init_from_a_policy_of_another_base_model_is_refused(mirrored_data, tiny_checkpoint, tmp_path, capsys):
    from mobile_vla_ros.policy.tiny import make_tiny_model

    other_base = make_tiny_model(tmp_path / "other_base", seed=7)
    code = train(
        mirrored_data / "train", other_base, tmp_path / "model", "--init-from", str(tiny_checkpoint), "--max-steps", "1"
    )
    assert code != 0
    assert "the base model given is 'other_base'" in capsys.readouterr().err


def test_loss_ignores_targets_past_the_episode_end(tiny_checkpoint, tiny_base_model):
    from mobile_vla_ros.data.clips import WindowDataset, collate_clips
    from mobile_vla_ros.data.windows import TrainingEpisode
    from mobile_vla_ros.policy.checkpoint import load_policy
    from mobile_vla_ros.training.lightning_module import PolicyModule

    policy = load_policy(tiny_checkpoint, tiny_base_model)
    module = PolicyModule(policy, 1e-3, 0.0, 1.0)
    frames = np.random.default_rng(0).integers(0, 256, (6, 224, 224, 3), dtype=np.uint8)
    actions = np.tile(np.float32([[0.3, 0.5, 0.0]]), (6, 1))
    dataset = WindowDataset([TrainingEpisode(frames, actions, LAB_INSTRUCTIONS["left"], "x.h5", 0.1)], 8, 5, 6)
    batch = collate_clips([dataset[0]])
    assert batch["target_mask"].sum() < batch["target_mask"].numel()
    with torch.no_grad():
        before = module.loss(batch)
        batch["targets"][~batch["target_mask"]] = -1.0  # a made-up ending changes nothing
        assert module.loss(batch) == pytest.approx(float(before), abs=1e-6)
        batch["targets"][batch["target_mask"]] = -1.0
        assert module.loss(batch) > before + 0.1


def test_cached_features_give_the_same_predictions_and_loss_as_the_frames(tiny_checkpoint, tiny_base_model):
    """A fixed encoder's features are computed once before training (cache_features); a batch of
    them must train the head exactly as the frames it replaces would, mirrored episodes included."""
    from mobile_vla_ros.data.clips import WindowDataset, collate_clips
    from mobile_vla_ros.data.windows import TrainingEpisode, with_mirrors
    from mobile_vla_ros.policy.checkpoint import load_policy
    from mobile_vla_ros.training.features import cache_features
    from mobile_vla_ros.training.lightning_module import PolicyModule

    policy = load_policy(tiny_checkpoint, tiny_base_model)
    module = PolicyModule(policy, 1e-3, 0.0, 1.0, backbone_learning_rate=0)
    rng = np.random.default_rng(1)
    episodes = with_mirrors(
        [
            TrainingEpisode(
                rng.integers(0, 256, (10, 224, 224, 3), dtype=np.uint8),
                rng.uniform(-0.5, 0.5, (10, 3)).astype(np.float32),
                LAB_INSTRUCTIONS[side],
                f"{side}.h5",
                0.1,
            )
            for side in ("left", "right")
        ]
    )
    cached = cache_features(policy, episodes)
    assert [episode.features.shape for episode in cached] == [(10, policy.normalizer.feature_mean.numel())] * 4
    module.eval()
    for dataset in (WindowDataset, lambda *a: WindowDataset(*a, clip_length=4)):
        from_frames, from_features = dataset(episodes, 8, 5), dataset(cached, 8, 5)
        frames_batch = collate_clips([from_frames[i] for i in range(len(from_frames))])
        features_batch = collate_clips([from_features[i] for i in range(len(from_features))])
        assert "frames" not in features_batch and "features" not in frames_batch
        with torch.no_grad():
            torch.testing.assert_close(module.predict_batch(features_batch), module.predict_batch(frames_batch))
            torch.testing.assert_close(module.loss(features_batch), module.loss(frames_batch))
    with pytest.raises(ValueError, match="mixes"):
        collate_clips([from_frames[0], from_features[0]])


def test_resume_refuses_changed_episodes(mirrored_data, tiny_base_model, tmp_path, capsys):
    import shutil

    import h5py

    data = shutil.copytree(mirrored_data / "train", tmp_path / "data")
    out = tmp_path / "run"
    assert train(data, tiny_base_model, out, "--max-steps", "2") == 0
    assert json.loads((out / "training" / "run.json").read_text())["inputs"]["dataset_sha256"].startswith("sha256:")
    edited = sorted(data.glob("*.h5"))[0]
    shutil.copy(edited, tmp_path / "original.h5")
    with h5py.File(edited, "r+") as h5:
        h5["actions"][3, 0] += 0.05  # one recorded action changed
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "3"]) == 2
    assert "are not the ones the run" in capsys.readouterr().err
    shutil.copy(tmp_path / "original.h5", edited)  # the data as it was; the range as an older range rule set it
    run_file = out / "training" / "run.json"
    run = json.loads(run_file.read_text())
    run["inputs"]["action_high"][1] += 0.25
    run_file.write_text(json.dumps(run))
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "3"]) == 2
    assert "the action normalisation range would change" in capsys.readouterr().err


def test_a_wall_clock_budget_that_cut_training_is_warned_about():
    from types import SimpleNamespace

    from mobile_vla_ros.training.config import TrainerSection
    from mobile_vla_ros.training.train import _cut_by_clock

    budget = TrainerSection(max_steps=100, max_minutes=1.0)
    assert "cut short by max_minutes=1 at step 40 of 100" in _cut_by_clock(SimpleNamespace(global_step=40), budget)
    assert _cut_by_clock(SimpleNamespace(global_step=100), budget) is None
    assert _cut_by_clock(SimpleNamespace(global_step=40), TrainerSection(max_steps=100)) is None
    time_only = _cut_by_clock(SimpleNamespace(global_step=40), TrainerSection(max_steps=-1, max_minutes=1.0))
    assert "only max_minutes=1 to stop it and ran 40 steps" in time_only and "of -1" not in time_only


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_checkpoint, tiny_base_model):
    """trainer.gradient_checkpointing recomputes each frame's activations in the backward pass:
    the same numbers, less memory (bench-train measures the memory)."""
    from mobile_vla_ros.data.clips import WindowDataset, collate_clips
    from mobile_vla_ros.data.windows import TrainingEpisode
    from mobile_vla_ros.policy.checkpoint import load_policy
    from mobile_vla_ros.training.lightning_module import PolicyModule

    frames = np.random.default_rng(2).integers(0, 256, (9, 224, 224, 3), dtype=np.uint8)
    actions = np.random.default_rng(3).uniform(-0.5, 0.5, (9, 3)).astype(np.float32)
    dataset = WindowDataset([TrainingEpisode(frames, actions, LAB_INSTRUCTIONS["left"], "x.h5", 0.1)], 8, 5, 3)
    results = []
    for checkpointing in (False, True):
        policy = load_policy(tiny_checkpoint, tiny_base_model)
        module = PolicyModule(policy, 1e-3, 0.0, 1.0, gradient_checkpointing=checkpointing).eval()
        loss = module.loss(collate_clips([dataset[len(dataset) - 1]]))
        loss.backward()
        lora = {name: p.grad.clone() for name, p in module.named_parameters() if "lora_" in name and p.grad is not None}
        results.append((loss.item(), lora))
    (loss_plain, grads_plain), (loss_checkpointed, grads_checkpointed) = results
    assert grads_plain and grads_plain.keys() == grads_checkpointed.keys()
    assert loss_checkpointed == pytest.approx(loss_plain, rel=1e-5)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_checkpointed[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    assert any(grad.abs().sum() > 0 for grad in grads_plain.values())
