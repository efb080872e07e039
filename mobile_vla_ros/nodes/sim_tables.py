"""sim_node's parameter and topic tables (nodes/parameters.py, nodes/interfaces.py), rendered into
docs/reference.md, and the checks its settings get at start and on `ros2 param set`.
"""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped, Twist
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, TimeReference
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.nodes.interfaces import LATCHED, PUBLISHES, SUBSCRIBES, Service, Topic
from mobile_vla_ros.nodes.parameters import NodeParameter
from mobile_vla_ros.sim.render import SCENES
from mobile_vla_ros.sim.world import RoomConfig

ROOM = RoomConfig()  # the simulated room's defaults (config/sim.yaml sets the demo's)
PARAMETERS = (
    NodeParameter(
        "seed", 0, "series of random layouts; sim/reset moves to the next layout of the current seed", read_only=False
    ),
    NodeParameter("first_episode", 0, "layout number of the episode at start; sim/reset moves on from there"),
    NodeParameter("physics_rate_hz", 50.0, "rate of the integration and sim/pose messages"),
    NodeParameter("camera_rate_hz", 30.0, "rate of camera/image_raw"),
    NodeParameter("image_width", 640, "camera image width in pixels"),
    NodeParameter("image_height", 480, "camera image height in pixels"),
    NodeParameter("hfov_deg", 100.0, "horizontal field of view of the camera"),
    NodeParameter("max_speed", ROOM.max_speed, "per-axis speed limit in m/s; faster commands are clipped"),
    NodeParameter("time_limit_s", ROOM.time_limit_s, "an episode that has not ended by then is timed_out"),
    NodeParameter("cmd_timeout_s", 0.5, "a cmd_vel older than this counts as zero velocity", read_only=False),
    NodeParameter(
        "freeze_camera",
        False,
        "camera/image_raw shows the episode's first view throughout (the demo's check of "
        "what a policy does when its images stop changing)",
        read_only=False,
    ),
    NodeParameter(
        "scene",
        "plain",
        "plain (the demonstrations' room), dark or recoloured: the same layouts in a light or colours "
        "the demonstrations never show (the familiarity monitor's test)",
        read_only=False,
    ),
    NodeParameter(
        "next_episode_on_end",
        False,
        "start the next layout by itself shortly after an episode ends (drive.launch.py: on; "
        "the demo resets episodes itself: off)",
    ),
    NodeParameter("start_hold_s", 0.0, "after sim/reset the robot stays at the start this long (commands ignored)"),
    NodeParameter(
        "lockstep",
        False,
        "publish /clock and advance it one physics step at a time, each once the pipeline has answered "
        "(cmd_vel, window/answered); the other nodes need use_sim_time:=true",
    ),
    NodeParameter("max_real_time_factor", 1.0, "lockstep: how much faster than real time simulated time may run"),
    NodeParameter("camera_frame_id", "sim_camera", "header.frame_id of the camera images"),
    NodeParameter("world_frame_id", "sim_room", "header.frame_id of sim/pose (room frame: x forward, y left)"),
)
LOCKSTEP = ("lockstep", True)


def check_positive(name: str, value) -> None:
    if not value > 0:
        raise MobileVlaError(f"parameter {name} must be positive, got {value}")


def check_scene(name: str, value) -> None:
    if value not in SCENES:
        raise MobileVlaError(f"parameter {name} must be one of {', '.join(SCENES)}, got {value!r}")


CAMERA = Topic("camera/image_raw", Image, PUBLISHES, "the simulated camera, rgb8, at camera_rate_hz")
POSE = Topic("sim/pose", PoseStamped, PUBLISHES, "the robot's position in the room (world_frame_id) at physics_rate_hz")
RESULT = Topic(
    "sim/result",
    String,
    PUBLISHES,
    "JSON: outcome, time, position, layout, episode, seed; at each episode's start and end",
    LATCHED,
)
CMD_VEL = Topic(
    "cmd_vel",
    Twist,
    SUBSCRIBES,
    "linear.x forward, linear.y left (angular.z ignored); one older than cmd_timeout_s counts as zero",
)
RESET = Service(
    "sim/reset",
    Trigger,
    "start the next layout of the seed's series; the answer's message is JSON: episode, seed, layout, release_time",
)
CLOCK = Topic(
    "/clock",
    Clock,
    PUBLISHES,
    "the simulated time, one physics step at a time, each once the pipeline has answered (other nodes: "
    "use_sim_time:=true)",
    when=LOCKSTEP,
)
WINDOW_ANSWERED = Topic(
    "window/answered", TimeReference, SUBSCRIBES, "inference_node's answer to a camera frame's window", when=LOCKSTEP
)
INSTRUCTION_AT = Topic(
    "sim/instruction_at",
    String,
    SUBSCRIBES,
    'JSON {"time_s": t, "instruction": text}: publish text on instruction just before the clock reaches t',
    when=LOCKSTEP,
)
INSTRUCTION = Topic("instruction", String, PUBLISHES, "the text of a sim/instruction_at request", when=LOCKSTEP)
INSTRUCTION_ACTIVE = Topic(
    "instruction/active",
    String,
    SUBSCRIBES,
    "inference_node's confirmation of an instruction switch; the clock waits for it",
    LATCHED,
    when=LOCKSTEP,
)
INTERFACES = (
    CAMERA,
    POSE,
    RESULT,
    CMD_VEL,
    RESET,
    CLOCK,
    WINDOW_ANSWERED,
    INSTRUCTION_AT,
    INSTRUCTION,
    INSTRUCTION_ACTIVE,
)
