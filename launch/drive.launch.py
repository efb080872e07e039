"""Drive with the policy: camera_window_node -> inference_node -> cmd_vel.

    ros2 launch mobile_vla_ros drive.launch.py model_dir:=/path/to/policy base_model_dir:=/path/to/kosmos-2 \
        image_topic:=/camera/image_raw instruction:=left
    ros2 topic pub --once /enable std_msgs/msg/Bool "{data: true}"      # the robot starts moving
    ros2 topic pub --once /instruction std_msgs/msg/String "{data: right}"

Safety default: the policy is disabled (`enable:=false`) until `true` arrives on `enable`; with
`use_joy:=true` the gamepad deadman (config/gamepads/<gamepad>.yaml, inference_node section) must
also be held, and the gamepad's teleop (on `cmd_vel_teleop`) overrides the policy. With
`use_sim:=true` the simulated room (sim_node) is the camera and the base, and the policy starts
enabled. Parameters: config/drive.yaml, then the gamepad profile, then the arguments below.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mobile_vla_ros"


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "drive.yaml"])
    sim_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "sim.yaml"])
    gamepad = PathJoinSubstitution(
        [FindPackageShare(PACKAGE), "config", "gamepads", [LaunchConfiguration("gamepad"), ".yaml"]]
    )
    image_topic = LaunchConfiguration("image_topic")
    use_joy = LaunchConfiguration("use_joy")
    use_sim = LaunchConfiguration("use_sim")
    start_enabled = PythonExpression(
        ["'", LaunchConfiguration("enable"), "'.lower() == 'true' or '", use_sim, "'.lower() == 'true'"]
    )
    arguments = [
        DeclareLaunchArgument("model_dir", description="trained policy directory (policy.json + safetensors)"),
        DeclareLaunchArgument("base_model_dir", description="local Kosmos-2 directory the policy was trained on"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera topic"),
        DeclareLaunchArgument("compressed", default_value="false",
                              description="subscribe <image_topic>/compressed (sensor_msgs/CompressedImage)"),
        DeclareLaunchArgument("rotate_180", default_value="false", description="camera mounted upside down"),
        DeclareLaunchArgument("instruction", default_value="left",
                              description="initial instruction: left, right, a preset name or full text"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda"),
        DeclareLaunchArgument("dtype", default_value="fp32", description="fp32, fp16, bf16"),
        DeclareLaunchArgument("enable", default_value="false",
                              description="start with the policy enabled (otherwise publish true on `enable`)"),
        DeclareLaunchArgument("use_joy", default_value="false",
                              description="start joy_node + teleop_node: deadman required, teleop overrides"),
        DeclareLaunchArgument("gamepad", default_value="xbox", description="profile in config/gamepads (xbox, dragonrise)"),
        DeclareLaunchArgument("use_sim", default_value="false",
                              description="drive the simulated room (sim_node) instead of a robot"),
    ]
    camera = Node(
        package=PACKAGE,
        executable="camera_window_node",
        name="camera_window_node",
        parameters=[
            config,
            {
                "model_dir": LaunchConfiguration("model_dir"),
                "compressed": ParameterValue(LaunchConfiguration("compressed"), value_type=bool),
                "rotate_180": ParameterValue(LaunchConfiguration("rotate_180"), value_type=bool),
            },
        ],
        remappings=[("image", image_topic), ("image/compressed", [image_topic, "/compressed"])],
        output="screen",
    )
    inference = Node(
        package=PACKAGE,
        executable="inference_node",
        name="inference_node",
        parameters=[
            config,
            gamepad,
            {
                "model_dir": LaunchConfiguration("model_dir"),
                "base_model_dir": LaunchConfiguration("base_model_dir"),
                "device": LaunchConfiguration("device"),
                "dtype": LaunchConfiguration("dtype"),
                "instruction": LaunchConfiguration("instruction"),
                "start_enabled": ParameterValue(start_enabled, value_type=bool),
                "require_deadman": ParameterValue(use_joy, value_type=bool),
            },
        ],
        output="screen",
    )
    joy = Node(
        package="joy",
        executable="joy_node",
        name="joy_node",
        parameters=[config],
        condition=IfCondition(use_joy),
    )
    teleop = Node(
        package=PACKAGE,
        executable="teleop_node",
        name="teleop_node",
        parameters=[config, gamepad],
        remappings=[("cmd_vel", "cmd_vel_teleop")],
        condition=IfCondition(use_joy),
        output="screen",
    )
    sim = Node(
        package=PACKAGE,
        executable="sim_node",
        name="sim_node",
        parameters=[sim_config],
        remappings=[("camera/image_raw", image_topic)],
        condition=IfCondition(use_sim),
        output="screen",
    )
    return LaunchDescription(arguments + [camera, inference, joy, teleop, sim])
