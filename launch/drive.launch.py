"""Drive with the policy: camera_window_node -> inference_node -> cmd_vel.

    ros2 launch mobile_vla_ros drive.launch.py model_dir:=/path/to/policy base_model_dir:=/path/to/kosmos-2 \
        image_topic:=/camera/image_raw instruction:=left
    ros2 topic pub --once /enable std_msgs/msg/Bool "{data: true}"      # the robot starts moving
    ros2 topic pub --once /instruction std_msgs/msg/String "{data: right}"

Every parameter value lives in config/drive.yaml (or the file given as `params_file:=`). An argument
below that you leave out changes nothing; one you give overrides its one key. Safety default: the
policy is disabled until `true` arrives on `enable`; with `teleop:=true` the gamepad deadman
(config/gamepads/<gamepad>.yaml, inference_node section) must also be held, and the gamepad's teleop
(on `cmd_vel_teleop`) overrides the policy. With `use_sim:=true` the simulated room (sim_node) is the
camera and the base, and the policy starts enabled (it moves at once) unless `enable:=false` is
given; `lockstep:=true`
adds simulated time that advances only once the policy has answered (the same run on a slow or busy
machine, only later: what `mobile-vla demo` uses). The simulator starts the next layout by itself
1 s after an episode ends, so the instruction topic can be tried live. With use_sim:=true every
node discovers on localhost only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, Humble's
ROS_LOCALHOST_ONLY=1): the simulated cmd_vel never reaches a robot on the network. The domain stays
the shell's (ROS_DOMAIN_ID, or 0), so `ros2 topic pub` from another shell on this machine reaches it.

`namespace:=robot1` puts every node and topic under /robot1 (a second robot); `cmd_vel_topic:=` renames
the policy's output (e.g. an input of twist_mux in front of the base). An argument this file does
not declare stops the launch with the known ones listed.

camera_window_node and inference_node are both required: when either exits (a model that does not
load, camera settings that differ from the policy's training), the whole launch shuts down, and
inference_node leaves a zero command on cmd_vel.
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import OpaqueFunction, Shutdown
from launch_ros.actions import Node

from launch import LaunchDescription
from mobile_vla_ros.nodes.launch_arguments import (
    Argument,
    declare,
    gamepad_profile,
    given,
    launch_parameters,
    node_overrides,
    params_file,
    parse_bool,
    refuse_unknown,
)
from mobile_vla_ros.nodes.node_specs import CAMERA, IMAGE_TOPIC, INFERENCE, PACKAGE, drive_nodes
from mobile_vla_ros.ros_domain import LOCALHOST_ONLY_ENV

REQUIRED = {CAMERA, INFERENCE}  # when either exits, the whole launch shuts down

ARGUMENTS = [
    Argument("model_dir", "trained policy directory (policy.json + safetensors)", default=None),
    Argument("base_model_dir", "local Kosmos-2 directory the policy was trained on", default=None),
    Argument("image_topic", "camera topic (<image_topic>/compressed with compressed:=true)", IMAGE_TOPIC),
    Argument("namespace", "namespace of every node and topic (a second robot)"),
    Argument("cmd_vel_topic", "topic of the policy's velocity command (e.g. a twist_mux input)", "cmd_vel"),
    Argument("params_file", "parameter YAML replacing the package's config/drive.yaml"),
    Argument("compressed", "true: subscribe <image_topic>/compressed", node=CAMERA, parameter="compressed", kind=bool),
    Argument("rotate_180", "camera mounted upside down", node=CAMERA, parameter="rotate_180", kind=bool),
    Argument(
        "instruction", "initial instruction: left, right, a preset or text", node=INFERENCE, parameter="instruction"
    ),
    Argument("device", "auto, cpu, cuda, cuda:N", node=INFERENCE, parameter="device"),
    Argument("dtype", "auto, fp32, fp16, bf16", node=INFERENCE, parameter="dtype"),
    Argument(
        "quantize",
        "none or int8: int8 Linear weights on the CPU, with dtype fp32",
        node=INFERENCE,
        parameter="quantize",
    ),
    Argument(
        "backend", "pytorch or onnxruntime (the graph of `mobile-vla export-onnx`)", node=INFERENCE, parameter="backend"
    ),
    Argument(
        "onnx_dir",
        "with backend onnxruntime: the export directory (MODEL_DIR/onnx when empty)",
        node=INFERENCE,
        parameter="onnx_dir",
    ),
    Argument("enable", "true: start with the policy enabled", node=INFERENCE, parameter="start_enabled", kind=bool),
    Argument(
        "teleop", "true: the gamepad drives too: its deadman must be held, its sticks override the policy", "false"
    ),
    Argument("use_joy", "with teleop:=true, start joy_node (false when another node publishes `joy`)", "true"),
    Argument("gamepad", "gamepad profile by name: config/gamepads/<gamepad>.yaml (xbox, dragonrise)", "xbox"),
    Argument("gamepad_config", "gamepad profile by path (wins over gamepad)"),
    Argument("use_sim", "drive the simulated room (sim_node) instead of a robot; the policy starts enabled", "false"),
    Argument("lockstep", "with use_sim: simulated time advances only as fast as the policy answers", "false"),
    Argument(
        "record_corrections",
        "true: save each takeover on cmd_vel_teleop as a correction episode",
        node=INFERENCE,
        parameter="record_corrections",
        kind=bool,
    ),
    Argument("corrections_dir", "directory of the correction episodes", node=INFERENCE, parameter="corrections_dir"),
]


def _nodes(context):
    refuse_unknown(context, ARGUMENTS, __file__)
    arguments = context.launch_configurations
    share = get_package_share_directory(PACKAGE)
    config = params_file(arguments, share, "drive.yaml")
    teleop = parse_bool("teleop", arguments["teleop"])
    if not teleop and "use_joy:=true" in context.argv:
        raise ValueError(
            "use_joy:=true no longer turns on the gamepad in drive.launch.py: give teleop:=true (deadman and "
            "override); use_joy only says whether to start joy_node, as in record.launch.py"
        )
    use_sim = parse_bool("use_sim", arguments["use_sim"])
    lockstep = parse_bool("lockstep", arguments["lockstep"])
    if lockstep and not use_sim:
        raise ValueError("lockstep:=true needs use_sim:=true (only the simulator can hold time)")
    inference = node_overrides(arguments, ARGUMENTS, INFERENCE)
    if use_sim and not given(arguments, "enable"):
        inference["start_enabled"] = True  # the simulator is safe to drive in
    nodes = drive_nodes(
        config,
        arguments["model_dir"],
        arguments["base_model_dir"],
        namespace=arguments["namespace"],
        image_topic=arguments["image_topic"],
        cmd_vel_topic=arguments["cmd_vel_topic"],
        camera=node_overrides(arguments, ARGUMENTS, CAMERA),
        inference=inference,
        gamepad_yaml=gamepad_profile(arguments, share) if teleop else None,
        use_joy=teleop and parse_bool("use_joy", arguments["use_joy"]),
        sim_yaml=f"{share}/config/sim.yaml" if use_sim else None,
        lockstep=lockstep,
        sim={"next_episode_on_end": True},
    )
    env = dict(LOCALHOST_ONLY_ENV) if use_sim else None  # the simulator's graph stays on this machine
    return [
        Node(
            package=node.package,
            executable=node.name,
            name=node.name,
            namespace=node.namespace,
            parameters=[launch_parameters(node.parameters)],
            remappings=node.remappings,
            output="screen" if node.package == PACKAGE else "log",
            additional_env=env,
            on_exit=Shutdown(reason=f"{node.name} exited") if node.name in REQUIRED else None,
        )
        for node in nodes
    ]


def generate_launch_description():
    declared = declare(ARGUMENTS, f"{get_package_share_directory(PACKAGE)}/config/drive.yaml")
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
