"""ament_python build description; also installable with pip for the ROS-free virtual environment."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mobile_vla_ros"

NODES = [
    "camera_window_node",
    "inference_node",
    "teleop_node",
    "recorder_node",
    "sim_node",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/gamepads", glob("config/gamepads/*.yaml")),
        (f"share/{PACKAGE}/models", ["models/README.md"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="mobile_vla_ros maintainers",
    maintainer_email="maintainers@mobile-vla.invalid",
    description="Language-conditioned driving for a mobile robot with a Kosmos-2 VLA policy.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [f"{node} = {PACKAGE}.nodes.{node}:main" for node in NODES]
        + ["mobile-vla = mobile_vla_ros.cli.main:main"],
    },
)
