"""inference_node's parameter and topic tables (nodes/parameters.py, nodes/interfaces.py), rendered
into docs/reference.md; nodes/inference_node.py creates its endpoints from them.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from sensor_msgs.msg import Image, Joy, TimeReference
from std_msgs.msg import Bool, String

from mobile_vla_ros.control.drive import SafetySettings
from mobile_vla_ros.control.limits import VelocityLimits
from mobile_vla_ros.nodes.camera_window_node import WINDOW, WINDOW_BUILT
from mobile_vla_ros.nodes.interfaces import LATCHED, PUBLISHES, SUBSCRIBES, Topic
from mobile_vla_ros.nodes.parameters import NodeParameter
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

LIMITS = VelocityLimits()  # the speed limits' defaults (drive.yaml sets the robot's)
SAFETY = SafetySettings()  # the safety settings' defaults, kept in one place
LIMIT_NAMES = ("max_linear_x", "max_linear_y", "max_speed", "max_accel")
# Read-only, fixed for the run, except the speed limits, instruction and instruction_presets: `ros2 param set`
# changes them while driving (inference_node's change for each, nodes/parameters.accept_changes).
PARAMETERS = (
    NodeParameter("model_dir", "", "policy checkpoint directory (policy.json + safetensors)"),
    NodeParameter("base_model_dir", "", "local Kosmos-2 directory the policy was trained on"),
    NodeParameter("device", "auto", "torch device: auto (CUDA when available), cpu, cuda, cuda:1, ..."),
    NodeParameter(
        "dtype",
        "auto",
        "auto (from the hardware: CUDA bf16 or fp16, CPU bf16 only with native bf16, else fp32), fp32, fp16 or bf16",
    ),
    NodeParameter(
        "quantize",
        "none",
        "none, or int8 (dynamic int8 Linear weights; CPU with dtype fp32; a checkpoint "
        "made by `mobile-vla quantize` loads its stored int8 backbone)",
    ),
    NodeParameter(
        "backend",
        "pytorch",
        "what runs Kosmos-2: pytorch, or onnxruntime (the graph of `mobile-vla export-onnx`, fp32; providers "
        "TensorRT, CUDA, CPU in that order, whichever is installed)",
    ),
    NodeParameter("onnx_dir", "", "with backend onnxruntime: the export directory; empty: MODEL_DIR/onnx"),
    NodeParameter(
        "allow_failed_precision_check",
        False,
        "drive at a dtype at which the policy fell behind fp32 in its training check (policy.json precision_checks)",
    ),
    NodeParameter(
        "max_new_frames_per_step",
        1,
        "frames the model encodes per step at most; when it fell further behind, "
        "skipped frames repeat the previous one (bounds the latency tail)",
    ),
    NodeParameter("control_rate_hz", 20.0, "cmd_vel publishing rate"),
    NodeParameter("max_linear_x", LIMITS.max_linear_x, "speed limit for |linear.x| in m/s", read_only=False),
    NodeParameter("max_linear_y", LIMITS.max_linear_y, "speed limit for |linear.y| in m/s", read_only=False),
    NodeParameter("max_speed", LIMITS.max_speed, "limit for the norm of (linear.x, linear.y) in m/s", read_only=False),
    NodeParameter(
        "max_accel",
        LIMITS.max_accel,
        "limit for the change of (linear.x, linear.y) in m/s^2; safety stops are immediate",
        read_only=False,
    ),
    NodeParameter(
        "max_model_output",
        SAFETY.max_model_output,
        "model actions beyond this magnitude (m/s) are a fault, not clipped",
    ),
    NodeParameter(
        "camera_stale_timeout_s",
        0.0,
        "stop when the newest window's capture stamp is older than this (s); 0: from the model "
        "(3 windows + 1 control period, at least 0.5 s); a set value must be >= 2 windows + 1 control period",
    ),
    NodeParameter(
        "chunk_stale_timeout_s",
        0.0,
        "stop when the chunk's observation is older than this (s); 0: from the model "
        "(6 windows + 1 control period, at least 1.0 s); a set value must be >= 2 windows + 1 control period",
    ),
    NodeParameter(
        "familiarity_action",
        "stop",
        "none, warn, slow or stop: what the robot does while its camera shows frames unlike the training "
        "frames (the policy's calibrated familiarity threshold exceeded for familiarity_hold_s)",
    ),
    NodeParameter(
        "familiarity_threshold", "p99.9", "which threshold of policy.json familiarity: p99.9 or p99 (more alarms)"
    ),
    NodeParameter(
        "familiarity_hold_s", 0.3, "scores above (below) the threshold this long make the frames unfamiliar (familiar)"
    ),
    NodeParameter(
        "familiarity_slow_factor", 0.3, "with familiarity_action slow: commands scaled by this while unfamiliar"
    ),
    NodeParameter(
        "override_hold_s", SAFETY.override_hold_s, "a cmd_vel_teleop message overrides the policy for this long"
    ),
    NodeParameter("start_enabled", SAFETY.start_enabled, "value of the enable gate before the first message on enable"),
    NodeParameter(
        "require_deadman", SAFETY.require_deadman, "also require the joy deadman button to be held for policy motion"
    ),
    NodeParameter("deadman_button", 2, "joy button index of the deadman"),
    NodeParameter("joy_timeout_s", SAFETY.joy_timeout_s, "the deadman counts as released when joy is older than this"),
    NodeParameter(
        "instruction",
        "left",
        "the instruction at start; setting it switches as a message on the instruction topic does "
        "(same rules; one the topic would refuse is refused)",
        read_only=False,
    ),
    NodeParameter(
        "instruction_presets",
        [f"bottle_{side}={text}" for side, text in LAB_INSTRUCTIONS.items()],
        "extra names for the instruction topic and parameter, 'name=full text'; a new list applies to the "
        "next instruction (a list with an entry not of that form is refused)",
        read_only=False,
    ),
    NodeParameter("status_period_s", 1.0, "period of the /diagnostics status"),
    NodeParameter("record_corrections", False, "save each human takeover on cmd_vel_teleop as a correction episode"),
    NodeParameter("corrections_dir", "~/mobile_vla_corrections", "directory of the correction episodes"),
    NodeParameter("correction_context_s", 2.0, "seconds of frames before a takeover kept in its episode"),
    NodeParameter("correction_end_hold_s", 1.0, "a takeover ends after this long without a teleop command"),
)
INSTRUCTION = Topic(
    "instruction",
    String,
    SUBSCRIBES,
    "'left', 'right', a preset name (instruction_presets) or free text; a change applies from the next inference",
)
ENABLE = Topic("enable", Bool, SUBSCRIBES, "gate for the policy's motion (start_enabled until the first message)")
JOY = Topic("joy", Joy, SUBSCRIBES, "deadman button (deadman_button), used when require_deadman is true")
CMD_VEL_TELEOP = Topic(
    "cmd_vel_teleop",
    Twist,
    SUBSCRIBES,
    "a human command: wins over the policy for override_hold_s; with record_corrections each takeover is "
    "saved as a correction episode",
)
CMD_VEL = Topic(
    "cmd_vel",
    Twist,
    PUBLISHES,
    "linear.x, linear.y (REP 103: y > 0 is left), all else zero, at control_rate_hz in every state "
    "(zero when not driving)",
)
WINDOW_ANSWERED = Topic(
    "window/answered",
    TimeReference,
    PUBLISHES,
    "one per window once the node is done with it: header = the window's header (capture stamp), time_ref = "
    "when, source = chunk, rejected, failed or dropped (sim_node's lockstep waits for it)",
)
INSTRUCTION_ACTIVE = Topic("instruction/active", String, PUBLISHES, "the instruction in force", LATCHED)
UNFAMILIAR = Topic(
    "familiarity/unfamiliar",
    Bool,
    PUBLISHES,
    "true while the newest frames are unlike the training frames (control/familiarity.py), on each change",
    LATCHED,
)
DIAGNOSTICS = Topic(
    "/diagnostics",
    DiagnosticArray,
    PUBLISHES,
    "every status_period_s: state, reason, instruction, control rate, and p50/p95/p99 of each latency stage: "
    "frame_age_at_build, window_transport, preprocess, queue_wait, backbone, head, inference_latency, "
    "executor_delay, obs_to_cmd_age (keys <stage>_ms_p95 etc., docs/performance.md)",
)
INTERFACES = (
    Topic(WINDOW.name, Image, SUBSCRIBES, "windows from camera_window_node"),
    Topic(WINDOW_BUILT.name, TimeReference, SUBSCRIBES, "when each window was built (for the latency stages)"),
    INSTRUCTION,
    ENABLE,
    JOY,
    CMD_VEL_TELEOP,
    CMD_VEL,
    WINDOW_ANSWERED,
    INSTRUCTION_ACTIVE,
    UNFAMILIAR,
    DIAGNOSTICS,
)
