"""Drive with the policy: camera_window_node -> inference_node -> cmd_vel.

    ros2 launch mobile_vla_ros drive.launch.py model_dir:=/path/to/policy base_model_dir:=/path/to/kosmos-2 \
        image_topic:=/camera/image_raw instruction:=left
    ros2 topic pub --once /enable std_msgs/msg/Bool "{data: true}"      # the robot starts moving
    ros2 topic pub --once /instruction std_msgs/msg/String "{data: right}"

Every parameter value lives in config/drive.yaml (or the file given as `params_file:=`). An argument
below that you leave out changes nothing; one you give overrides its one key. Safety default: the
policy is disabled until `true` arrives on `enable`; with `use_joy:=true` the gamepad deadman
(config/gamepads/<gamepad>.yaml, inference_node section) must also be held, and the gamepad's teleop
(on `cmd_vel_teleop`) overrides the policy. With `use_sim:=true` the simulated room (sim_node) is the
camera and the base, and the policy starts enabled unless `enable:=false` is given; `lockstep:=true`
adds simulated time that advances only once the policy has answered (the same run on a slow or busy
machine, only later: what `mobile-vla demo` uses). The simulator starts the next layout by itself
1 s after an episode ends, so the instruction topic can be tried live. With use_sim:=true every
node discovers on localhost only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, Humble's
ROS_LOCALHOST_ONLY=1): the simulated cmd_vel never reaches a robot on the network. The domain stays
the shell's (ROS_DOMAIN_ID, or 0), so `ros2 topic pub` from another shell on this machine reaches it.

camera_window_node and inference_node are both required: when either exits (a model that does not
load, camera settings that differ from the policy's training), the whole launch shuts down, and
inference_node leaves a zero command on cmd_vel.
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch_ros.actions import Node

from launch import LaunchDescription
from mobile_vla_ros.nodes.launch_arguments import (
    gamepad_profile,
    given,
    lockstep_sim_parameters,
    overrides,
    params_file,
    parse_bool,
)
from mobile_vla_ros.ros_domain import LOCALHOST_ONLY_ENV

PACKAGE = "mobile_vla_ros"
OPTIONAL = ""  # an argument left at this value does not touch the YAML

ARGUMENTS = [
    ("model_dir", None, "trained policy directory (policy.json + safetensors)"),
    ("base_model_dir", None, "local Kosmos-2 directory the policy was trained on"),
    ("image_topic", "/camera/image_raw", "camera topic (a remapping; <image_topic>/compressed with compressed:=true)"),
    ("params_file", OPTIONAL, "parameter YAML replacing the package's config/drive.yaml"),
    ("compressed", OPTIONAL, "true: subscribe <image_topic>/compressed (overrides drive.yaml)"),
    ("rotate_180", OPTIONAL, "camera mounted upside down (overrides drive.yaml)"),
    ("instruction", OPTIONAL, "initial instruction: left, right, a preset name or full text (overrides drive.yaml)"),
    ("device", OPTIONAL, "auto, cpu, cuda, cuda:N (overrides drive.yaml)"),
    ("dtype", OPTIONAL, "auto, fp32, fp16, bf16 (overrides drive.yaml)"),
    ("quantize", OPTIONAL, "none or int8: int8 Linear weights on the CPU, with dtype fp32 (overrides drive.yaml)"),
    ("backend", OPTIONAL, "pytorch or onnxruntime: the graph of `mobile-vla export-onnx` (overrides drive.yaml)"),
    ("onnx_dir", OPTIONAL, "with backend onnxruntime: the export directory (default MODEL_DIR/onnx)"),
    ("enable", OPTIONAL, "true: start with the policy enabled (overrides drive.yaml start_enabled)"),
    ("use_joy", "false", "start joy_node + teleop_node: deadman required, teleop overrides"),
    ("gamepad", "xbox", "gamepad profile by name: config/gamepads/<gamepad>.yaml (xbox, dragonrise)"),
    ("gamepad_config", OPTIONAL, "gamepad profile by path (wins over gamepad)"),
    ("use_sim", "false", "drive the simulated room (sim_node) instead of a robot"),
    ("lockstep", "false", "with use_sim: simulated time advances only as fast as the policy answers"),
    (
        "record_corrections",
        OPTIONAL,
        "true: save each takeover on cmd_vel_teleop as a correction episode (overrides drive.yaml)",
    ),
    ("corrections_dir", OPTIONAL, "directory of the correction episodes (overrides drive.yaml)"),
]


def _nodes(context):
    arguments = context.launch_configurations
    share = get_package_share_directory(PACKAGE)
    config = params_file(arguments, share, "drive.yaml")
    use_joy = parse_bool("use_joy", arguments["use_joy"])
    use_sim = parse_bool("use_sim", arguments["use_sim"])
    lockstep = parse_bool("lockstep", arguments["lockstep"])
    if lockstep and not use_sim:
        raise ValueError("lockstep:=true needs use_sim:=true (only the simulator can hold time)")
    image_topic = arguments["image_topic"]
    model = {"model_dir": arguments["model_dir"]}
    sim_time = {"use_sim_time": True} if lockstep else {}  # sim_node publishes /clock
    env = dict(LOCALHOST_ONLY_ENV) if use_sim else None  # the simulator's graph stays on this machine

    camera_overrides = overrides(arguments, {"compressed": ("compressed", bool), "rotate_180": ("rotate_180", bool)})
    inference_overrides = overrides(
        arguments,
        {
            "instruction": ("instruction", str),
            "device": ("device", str),
            "dtype": ("dtype", str),
            "quantize": ("quantize", str),
            "backend": ("backend", str),
            "onnx_dir": ("onnx_dir", str),
            "enable": ("start_enabled", bool),
            "record_corrections": ("record_corrections", bool),
            "corrections_dir": ("corrections_dir", str),
        },
    )
    if use_sim and not given(arguments, "enable"):
        inference_overrides["start_enabled"] = True  # the simulator is safe to drive in
    if use_joy:
        inference_overrides["require_deadman"] = True
    inference_files = [config]
    teleop = []
    if use_joy:
        gamepad = gamepad_profile(arguments, share)
        inference_files.append(gamepad)
        teleop = [
            Node(package="joy", executable="joy_node", name="joy_node", parameters=[config], additional_env=env),
            Node(
                package=PACKAGE,
                executable="teleop_node",
                name="teleop_node",
                parameters=[config, gamepad],
                remappings=[("cmd_vel", "cmd_vel_teleop")],
                output="screen",
                additional_env=env,
            ),
        ]
    nodes = [
        Node(
            package=PACKAGE,
            executable="camera_window_node",
            name="camera_window_node",
            parameters=[config, model, camera_overrides, sim_time],
            remappings=[("image", image_topic), ("image/compressed", f"{image_topic}/compressed")],
            output="screen",
            additional_env=env,
            on_exit=Shutdown(reason="camera_window_node exited"),
        ),
        Node(
            package=PACKAGE,
            executable="inference_node",
            name="inference_node",
            parameters=[
                *inference_files,
                model,
                {"base_model_dir": arguments["base_model_dir"]},
                inference_overrides,
                sim_time,
            ],
            output="screen",
            additional_env=env,
            on_exit=Shutdown(reason="inference_node exited"),
        ),
        *teleop,
    ]
    if use_sim:
        nodes.append(
            Node(
                package=PACKAGE,
                executable="sim_node",
                name="sim_node",
                parameters=[
                    f"{share}/config/sim.yaml",
                    {"next_episode_on_end": True},
                    lockstep_sim_parameters(config, arguments["model_dir"]) if lockstep else {},
                ],
                remappings=[("camera/image_raw", image_topic)],
                output="screen",
                additional_env=env,
            )
        )
    return nodes


def generate_launch_description():
    declared = [
        DeclareLaunchArgument(name, description=description)
        if default is None
        else DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
