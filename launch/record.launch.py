"""Record episodes with a gamepad: joy_node (the `joy` package) -> teleop_node -> cmd_vel, and
recorder_node writing H5 episodes from the camera, cmd_vel, joy and the instruction topic.

    ros2 launch mobile_vla_ros record.launch.py image_topic:=/camera/image_raw gamepad:=xbox

Every parameter value lives in config/record.yaml (or `params_file:=`) and the gamepad profile
(config/gamepads/<gamepad>.yaml, or `gamepad_config:=/path.yaml`). An argument below that you leave
out changes nothing; one you give overrides its one key. `image_topic`, `compressed`, `use_joy`,
`namespace` and `cmd_vel_topic` mean what they mean in drive.launch.py. An argument this file does
not declare stops the launch with the known ones listed.
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription
from mobile_vla_ros.nodes.launch_arguments import (
    Argument,
    declare,
    gamepad_profile,
    node_overrides,
    params_file,
    parse_bool,
    refuse_unknown,
    section,
)

PACKAGE = "mobile_vla_ros"
RECORDER = "recorder_node"

ARGUMENTS = [
    Argument("params_file", "parameter YAML replacing the package's config/record.yaml"),
    Argument("image_topic", "camera topic (<image_topic>/compressed with compressed:=true)", "/camera/image_raw"),
    Argument("namespace", "namespace of every node and topic (a second robot)"),
    Argument("cmd_vel_topic", "topic of the velocity command teleop sends and the recorder stores", "cmd_vel"),
    Argument(
        "compressed", "true: subscribe <image_topic>/compressed", node=RECORDER, parameter="compressed", kind=bool
    ),
    Argument("rotate_180", "camera mounted upside down", node=RECORDER, parameter="rotate_180", kind=bool),
    Argument("output_dir", "where episodes go", node=RECORDER, parameter="output_dir"),
    Argument(
        "instruction", "instruction before one is chosen: left, right or text", node=RECORDER, parameter="instruction"
    ),
    Argument("gamepad", "gamepad profile by name: config/gamepads/<gamepad>.yaml (xbox, dragonrise)", "xbox"),
    Argument("gamepad_config", "gamepad profile by path (wins over gamepad)"),
    Argument("use_joy", "start joy_node (false when another node publishes `joy`)", "true"),
]


def _nodes(context):
    refuse_unknown(context, ARGUMENTS, __file__)
    arguments = context.launch_configurations
    share = get_package_share_directory(PACKAGE)
    config = params_file(arguments, share, "record.yaml")
    gamepad = gamepad_profile(arguments, share)
    namespace, image_topic = arguments["namespace"], arguments["image_topic"]
    cmd_vel = [("cmd_vel", arguments["cmd_vel_topic"])]
    nodes = [
        Node(
            package=PACKAGE,
            executable="teleop_node",
            name="teleop_node",
            namespace=namespace,
            parameters=[section(config, "teleop_node"), section(gamepad, "teleop_node")],
            remappings=cmd_vel,
            output="screen",
        ),
        Node(
            package=PACKAGE,
            executable="recorder_node",
            name=RECORDER,
            namespace=namespace,
            parameters=[
                section(config, RECORDER),
                section(gamepad, RECORDER),
                node_overrides(arguments, ARGUMENTS, RECORDER),
            ],
            remappings=[("image", image_topic), ("image/compressed", f"{image_topic}/compressed"), *cmd_vel],
            output="screen",
        ),
    ]
    if parse_bool("use_joy", arguments["use_joy"]):
        nodes.insert(
            0,
            Node(
                package="joy",
                executable="joy_node",
                name="joy_node",
                namespace=namespace,
                parameters=[section(config, "joy_node")],
            ),
        )
    return nodes


def generate_launch_description():
    declared = declare(ARGUMENTS, f"{get_package_share_directory(PACKAGE)}/config/record.yaml")
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
