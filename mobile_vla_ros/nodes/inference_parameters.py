"""inference_node's parameters: name -> (default, description), and the instruction presets' parser.
Kept beside the node so its file holds the wiring; drive.yaml carries the same keys (test_config_files)."""

from __future__ import annotations

from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

# name -> (default, description); declared read-only: they are fixed for a run.
PARAMETERS = {
    "model_dir": ("", "policy checkpoint directory (policy.json + safetensors)"),
    "base_model_dir": ("", "local Kosmos-2 directory the policy was trained on"),
    "device": ("auto", "torch device: auto (CUDA when available), cpu, cuda, cuda:1, ..."),
    "dtype": (
        "auto",
        "auto (from the hardware: CUDA bf16 or fp16, CPU bf16 only with native bf16, else fp32), fp32, fp16 or bf16",
    ),
    "quantize": (
        "none",
        "none, or int8 (dynamic int8 Linear weights; CPU with dtype fp32; a checkpoint "
        "made by `mobile-vla quantize` loads its stored int8 backbone)",
    ),
    "max_new_frames_per_step": (
        1,
        "frames the model encodes per step at most; when it fell further behind, "
        "skipped frames repeat the previous one (bounds the latency tail)",
    ),
    "control_rate_hz": (20.0, "cmd_vel publishing rate"),
    "max_linear_x": (1.15, "speed limit for |linear.x| in m/s"),
    "max_linear_y": (1.15, "speed limit for |linear.y| in m/s"),
    "max_speed": (1.15, "limit for the norm of (linear.x, linear.y) in m/s"),
    "max_accel": (2.0, "limit for the change of (linear.x, linear.y) in m/s^2; safety stops are immediate"),
    "max_model_output": (3.0, "model actions beyond this magnitude (m/s) are a fault, not clipped"),
    "camera_stale_timeout_s": (
        0.0,
        "stop when the newest window's capture stamp is older than this (s); 0: from the model "
        "(3 windows + 1 control period, at least 0.5 s); a set value must be >= 2 windows + 1 control period",
    ),
    "chunk_stale_timeout_s": (
        0.0,
        "stop when the chunk's observation is older than this (s); 0: from the model "
        "(6 windows + 1 control period, at least 1.0 s); a set value must be >= 2 windows + 1 control period",
    ),
    "override_hold_s": (0.5, "a cmd_vel_teleop message overrides the policy for this long"),
    "start_enabled": (False, "value of the enable gate before the first message on enable"),
    "require_deadman": (False, "also require the joy deadman button to be held for policy motion"),
    "deadman_button": (2, "joy button index of the deadman"),
    "joy_timeout_s": (0.5, "the deadman counts as released when joy is older than this"),
    "instruction": ("left", "initial instruction (same rules as the instruction topic)"),
    "instruction_presets": (
        [f"bottle_{side}={text}" for side, text in LAB_INSTRUCTIONS.items()],
        "extra names for the instruction topic, 'name=full text'",
    ),
    "status_period_s": (1.0, "period of the /diagnostics status"),
    "record_corrections": (False, "save each human takeover on cmd_vel_teleop as a correction episode"),
    "corrections_dir": ("~/mobile_vla_corrections", "directory of the correction episodes"),
    "correction_context_s": (2.0, "seconds of frames before a takeover kept in its episode"),
    "correction_end_hold_s": (1.0, "a takeover ends after this long without a teleop command"),
}


def parse_presets(entries) -> dict[str, str]:
    presets = {}
    for entry in entries or ():
        name, separator, text = entry.partition("=")
        if not separator or not name.strip() or not text.strip():
            raise MobileVlaError(f"instruction_presets entry {entry!r} is not of the form 'name=full instruction'")
        presets[name.strip().lower()] = text.strip()
    return presets
