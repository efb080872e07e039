"""Record episodes with a gamepad: joy_node (the `joy` package) -> teleop_node -> cmd_vel, and
recorder_node writing H5 episodes from the camera, cmd_vel, joy and the instruction topic.

    ros2 launch mobile_vla_ros record.launch.py image_topic:=/camera/image_raw gamepad:=dragonrise

Parameters: config/record.yaml, then config/gamepads/<gamepad>.yaml (button/axis numbers), then
the arguments below.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mobile_vla_ros"


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "record.yaml"])
    gamepad = PathJoinSubstitution(
        [FindPackageShare(PACKAGE), "config", "gamepads", [LaunchConfiguration("gamepad"), ".yaml"]]
    )
    arguments = [
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera topic"),
        DeclareLaunchArgument("compressed", default_value="false",
                              description="the camera topic carries sensor_msgs/CompressedImage"),
        DeclareLaunchArgument("gamepad", default_value="xbox", description="profile in config/gamepads (xbox, dragonrise)"),
        DeclareLaunchArgument("output_dir", default_value="~/mobile_vla_data", description="where episodes go"),
        DeclareLaunchArgument("use_joy", default_value="true",
                              description="start joy_node (false when another node publishes `joy`)"),
    ]
    joy = Node(
        package="joy",
        executable="joy_node",
        name="joy_node",
        parameters=[config],
        condition=IfCondition(LaunchConfiguration("use_joy")),
    )
    teleop = Node(
        package=PACKAGE,
        executable="teleop_node",
        name="teleop_node",
        parameters=[config, gamepad],
        output="screen",
    )
    recorder = Node(
        package=PACKAGE,
        executable="recorder_node",
        name="recorder_node",
        parameters=[
            config,
            gamepad,
            {
                "image_topic": LaunchConfiguration("image_topic"),
                "compressed": ParameterValue(LaunchConfiguration("compressed"), value_type=bool),
                "output_dir": LaunchConfiguration("output_dir"),
            },
        ],
        output="screen",
    )
    return LaunchDescription(arguments + [joy, teleop, recorder])
