"""The `mobile-vla` command line: sub-commands a user runs first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Kosmos2ForConditionalGeneration

from mobile_vla_ros.cli.main import build_parser, main
from mobile_vla_ros.cli.options import resolve_moved_positionals


def test_help_lists_the_sub_commands(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"make-tiny-model", "bench", "bench-drive", "train", "eval", "inspect", "demo"} <= set(commands)


def test_sub_commands_come_in_workflow_order_and_take_global_flags_after_them():
    commands = list(build_parser()._subparsers._group_actions[0].choices)
    assert commands.index("inspect") < commands.index("train") < commands.index("eval") < commands.index("bench")
    assert build_parser().parse_args(["inspect", "--data", "some.h5", "-v"]).verbose is True


def test_every_option_shows_its_default_in_help():
    """An option whose default is a value says so; train names the config/train.yaml key it sets."""
    for name, subparser in build_parser()._subparsers._group_actions[0].choices.items():
        text = " ".join(subparser.format_help().split())
        for action in subparser._actions:
            shown = action.default not in (None, False, "==SUPPRESS==") and action.help != "==SUPPRESS=="
            if action.option_strings and shown and not action.required and action.dest != "help":
                assert f"default: {action.default}" in text or "default" in (action.help or ""), (name, action.dest)
    train = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "--learning-rate LEARNING_RATE AdamW learning rate (default: config/train.yaml optim.learning_rate" in train


def _sub_commands():
    return build_parser()._subparsers._group_actions[0].choices


def test_one_flag_per_concept_across_sub_commands():
    """Policy, base model, episodes read, output, precision and device have one spelling each; an
    earlier spelling is hidden from --help; --dtype offers auto and --device defaults to auto."""
    for name, subparser in _sub_commands().items():
        shown = [action for action in subparser._actions if action.help != "==SUPPRESS=="]
        flags = {flag for action in shown for flag in action.option_strings}
        for synonym in ("--base", "--model-dir", "--output", "--lr", "--accumulate", "--rate"):
            assert synonym not in flags, (name, synonym)
        # --seed seeds what the command itself makes (tiny weights, a training run); the demo's trial
        # layouts are --layout-seed
        assert "--seed" not in flags or name in ("make-tiny-model", "train"), name
        for action in shown:
            if not action.option_strings:  # a positional is the command's own object, never a shared concept
                assert name in ("import-bag", "import-robovlms"), (name, action.dest)
            if "--dtype" in action.option_strings:
                assert "auto" in action.choices, name
            if "--device" in action.option_strings:
                assert action.default == "auto", name
            if "--model" in action.option_strings:
                assert action.metavar == "MODEL_DIR", name


@pytest.mark.parametrize(
    "argv, dest, value, warning",
    [
        (["train", "--out", "x", "--lr", "1e-3"], "learning_rate", 1e-3, "--lr is deprecated, use --learning-rate"),
        (["train", "--out", "x", "--accumulate", "2"], "accumulate_grad_batches", 2, "use --accumulate-grad-batches"),
        (["quantize", "pol", "--base-model", "b", "--out", "o"], "model", "pol", "positional MODEL_DIR is deprecated"),
        (["quantize", "--model", "p", "--dtype", "int8", "--out", "o"], "quantize", "int8", "use --quantize"),
        (["export-onnx", "pol", "--base-model", "b"], "model", Path("pol"), "use --model"),
        (["make-tiny-model", "tiny"], "out", "tiny", "positional OUT_DIR is deprecated, use --out"),
        (["export", "a", "b", "--out", "o"], "data", [Path("a"), Path("b")], "positional EPISODES is deprecated"),
        (["inspect", "e.h5"], "data", Path("e.h5"), "positional PATH is deprecated, use --data"),
        (["import-robovlms", "c.pt", "--base", "b"], "base_model", "b", "--base is deprecated, use --base-model"),
        (["bench-record", "--rate", "5"], "sample_rate", 5.0, "--rate is deprecated, use --sample-rate"),
        (["demo", "--seed", "3"], "layout_seed", 3, "--seed is deprecated, use --layout-seed"),
    ],
)
def test_spellings_of_the_earlier_release_still_work_and_say_their_new_name(argv, dest, value, warning, capsys):
    args = build_parser().parse_args(argv)
    resolve_moved_positionals(args)
    assert getattr(args, dest) == value
    assert warning in capsys.readouterr().err


def test_a_moved_positional_and_its_flag_together_or_neither_are_refused(capsys):
    assert main(["quantize", "a", "--model", "b", "--base-model", "c", "--out", "d"]) == 2
    assert "give --model once" in capsys.readouterr().err
    assert main(["quantize", "--base-model", "c", "--out", "d"]) == 2
    assert "required: --model" in capsys.readouterr().err
    assert "--model MODEL_DIR" in _sub_commands()["quantize"].format_usage()  # shown as required, not [--model]
    assert "[--model" not in _sub_commands()["quantize"].format_usage()


def test_make_tiny_model_writes_a_loadable_kosmos2(tmp_path, capsys):
    assert main(["make-tiny-model", "--out", str(tmp_path / "tiny"), "--width", "32", "--layers", "1"]) == 0
    assert "fingerprint sha256:" in capsys.readouterr().out
    model = Kosmos2ForConditionalGeneration.from_pretrained(tmp_path / "tiny", local_files_only=True)
    assert model.config.text_config.embed_dim == 32 and model.config.text_config.layers == 1


def test_bench_on_a_local_model_writes_the_figures(tiny_base_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(["bench", "--base-model", str(tiny_base_model), "--dtype", "fp32", "--repeats", "2", "--json", str(out)])
        == 0
    )
    figures = json.loads(out.read_text())
    for key in (
        "bare_forward_ms_p50",
        "naive_step_ms_p50",
        "cached_step_ms_p50",
        "peak_rss_mb",
        "naive_step_ms_p95",
        "cached_step_ms_p95",
        "bare_forward_ms_p95",
    ):
        assert figures[key] > 0, key
    assert figures["versions"]["torch"] and figures["device"] == "cpu"
    assert "cached step" in capsys.readouterr().out


def test_errors_of_the_package_print_one_line_and_exit_2(tmp_path, capsys):
    code = main(["bench", "--base-model", str(tmp_path / "missing"), "--repeats", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_an_error_in_the_reference_process_reaches_the_user_as_itself(tiny_base_model, tmp_path, capsys):
    """bf16 is measured beside an fp32 reference run in a child process: a base model that fails to
    load there (a config, no weights) is the child's BaseModelError, printed as one line."""
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_base_model / "config.json").read_text())
    code = main(["bench", "--base-model", str(broken), "--dtype", "bf16", "--repeats", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and "fp32 reference in a separate process" in out
    assert str(broken) in err and "Traceback" not in err


def test_damaged_inputs_and_impossible_settings_are_one_line_errors(tiny_base_model, tmp_path, capsys):
    damaged = tmp_path / "damaged_base"
    shutil.copytree(tiny_base_model, damaged)
    (damaged / "config.json").write_text('{"model_type": "kosmos-2", ')  # cut off mid-write
    run = tmp_path / "policy" / "training"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{")
    cases = [
        (["bench", "--base-model", str(damaged)], "config.json is not a JSON object"),
        (["train", "--resume", "--out", str(run.parent)], "run.json is not a JSON object"),
    ]
    if not torch.cuda.is_available():
        cases.append((["bench", "--base-model", str(tiny_base_model), "--device", "cuda"], "CUDA is not available"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_bench_train_runs_the_real_training_loop_with_lora_and_reports_the_figures(tiny_base_model, tmp_path, capsys):
    from mobile_vla_ros.training.bench import frames_per_episode_epoch

    out = tmp_path / "bench_train.json"
    argv = ["bench-train", "--base-model", str(tiny_base_model), "--steps", "3", "--pairs", "1"]
    assert main([*argv, "--frames", "10", "--workdir", str(tmp_path / "work"), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    # LoRA trains (train.yaml's backbone learning rate) and the whitening followed the features each step.
    assert figures["lora_trains"] and figures["whitening_tracked_batches"] == 3
    assert len(figures["step_s"]) == 3 and all(s > 0 for s in figures["step_s"])
    assert all(1 <= frames <= 8 for frames in figures["frames_per_step"])  # one window of 8 frames at most
    assert figures["seconds_per_frame"] > 0 and figures["gflop_per_frame"] > 0 and figures["peak_rss_mb"] > 100
    # The lab's 500 episodes of 18 frames and their mirrors, one window per step.
    assert figures["estimate"]["steps_per_epoch"] == 2 * 500 * 18
    assert figures["estimate"]["frames_per_epoch"] == 2 * 500 * frames_per_episode_epoch(18, 8, 1)
    assert (tmp_path / "work" / "policy" / "policy.json").is_file()  # the run exported a policy, as train does
    assert "whitening tracked on 3 batches" in capsys.readouterr().out


def test_frames_per_epoch_counts_each_clips_frames_once():
    from mobile_vla_ros.training.bench import frames_per_episode_epoch

    # One window per clip: windows ending at frames 0..17 hold 1, 2, ..., 8, 8, ... distinct frames.
    assert frames_per_episode_epoch(18, 8, 1) == sum(range(1, 8)) + 8 * 11
    # A clip as long as the episode encodes every frame once.
    assert frames_per_episode_epoch(18, 8, 24) == 18
    # Clips of 6 windows: [0, 6) 6 frames, [6, 12) frames 0..11, [12, 18) frames 5..17.
    assert frames_per_episode_epoch(18, 8, 6) == 6 + 12 + 13


def test_bench_times_onnx_runtime_beside_pytorch_in_one_run(tiny_base_model, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["bench", "--base-model", str(tiny_base_model), "--dtype", "fp32", "--backend", "onnxruntime"]
    assert main([*argv, "--repeats", "2", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["cached_step_ms_p50"] > 0 and figures["onnxruntime_cached_step_ms_p50"] > 0
    assert figures["onnxruntime_providers"][-1] == "CPUExecutionProvider"
    assert figures["onnxruntime_rss_after_load_mb"] > 100 and figures["onnxruntime_peak_rss_mb"] > 100
    assert figures["onnxruntime_action_diff_max"] < 1e-3  # the same policy, the same windows
    assert figures["onnxruntime_export_check"]["passed"] and figures["onnxruntime_export_s"] > 0
