"""Record episodes with a gamepad: joy_node (the `joy` package) -> teleop_node -> cmd_vel, and
recorder_node writing H5 episodes from the camera, cmd_vel, joy and the instruction topic.

    ros2 launch mobile_vla_ros record.launch.py image_topic:=/camera/image_raw gamepad:=dragonrise

Every parameter value lives in config/record.yaml (or `params_file:=`) and the gamepad profile
(config/gamepads/<gamepad>.yaml, or `gamepad_config:=/path.yaml`). An argument below that you leave
out changes nothing; one you give overrides its one key.
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription
from mobile_vla_ros.nodes.launch_arguments import gamepad_profile, overrides, params_file, parse_bool

PACKAGE = "mobile_vla_ros"
OPTIONAL = ""  # an argument left at this value does not touch the YAML

ARGUMENTS = [
    ("params_file", OPTIONAL, "parameter YAML replacing the package's config/record.yaml"),
    ("image_topic", OPTIONAL, "camera topic (overrides record.yaml)"),
    ("compressed", OPTIONAL, "true: the camera topic carries sensor_msgs/CompressedImage (overrides record.yaml)"),
    ("rotate_180", OPTIONAL, "camera mounted upside down (overrides record.yaml)"),
    ("output_dir", OPTIONAL, "where episodes go (overrides record.yaml)"),
    ("instruction", OPTIONAL, "instruction before one is chosen: left, right or text (overrides record.yaml)"),
    ("gamepad", "xbox", "gamepad profile by name: config/gamepads/<gamepad>.yaml (xbox, dragonrise)"),
    ("gamepad_config", OPTIONAL, "gamepad profile by path (wins over gamepad)"),
    ("use_joy", "true", "start joy_node (false when another node publishes `joy`)"),
]


def _nodes(context):
    arguments = context.launch_configurations
    share = get_package_share_directory(PACKAGE)
    config = params_file(arguments, share, "record.yaml")
    gamepad = gamepad_profile(arguments, share)
    recorder_overrides = overrides(
        arguments,
        {
            "image_topic": ("image_topic", str),
            "compressed": ("compressed", bool),
            "rotate_180": ("rotate_180", bool),
            "output_dir": ("output_dir", str),
            "instruction": ("instruction", str),
        },
    )
    nodes = [
        Node(
            package=PACKAGE, executable="teleop_node", name="teleop_node", parameters=[config, gamepad], output="screen"
        ),
        Node(
            package=PACKAGE,
            executable="recorder_node",
            name="recorder_node",
            parameters=[config, gamepad, recorder_overrides],
            output="screen",
        ),
    ]
    if parse_bool("use_joy", arguments["use_joy"]):
        nodes.insert(0, Node(package="joy", executable="joy_node", name="joy_node", parameters=[config]))
    return nodes


def generate_launch_description():
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
