"""What the launch files do with their arguments, kept out of them so both share it and it is testable.

The YAML under config/ is the one home of every parameter value. A launch argument the user did not
give is the empty string and leaves the node alone; one the user gave overrides one named key
(nav2_bringup's rule), and `--show-args` names the YAML's value as its default. An argument the
launch file does not declare is refused with the known ones listed (`ros2 launch` itself would drop
it silently). Gamepad profiles are chosen by name (config/gamepads/<name>.yaml) or by path.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from mobile_vla_ros.nodes.node_specs import yaml_section

UNSET = ""
_BOOLEANS = {"true": True, "false": False}
ROS2_LAUNCH_OWN = {"launch-prefix", "launch-prefix-filter"}  # `ros2 launch --launch-prefix` adds these


@dataclass(frozen=True)
class Argument:
    """One launch argument. `default` None: required. With `node` and `parameter` it overrides that
    key of the parameter YAML when given (its default is then UNSET: the YAML decides)."""

    name: str
    description: str
    default: str | None = UNSET
    node: str | None = None
    parameter: str | None = None
    kind: type = str


def declare(table: Iterable[Argument], params_yaml: str | Path) -> list:
    """DeclareLaunchArgument for each row; an override's description ends with the YAML's value, so
    `ros2 launch ... --show-args` shows what a robot gets when the argument is left out."""
    from launch.actions import DeclareLaunchArgument

    document = yaml.safe_load(Path(params_yaml).read_text())
    declared = []
    for row in table:
        description = row.description
        if row.parameter is not None:
            value = document.get(row.node, {}).get("ros__parameters", {}).get(row.parameter)
            description += f" (left out: {Path(params_yaml).name} {row.node}.{row.parameter} = {value!r})"
        if row.default is None:
            declared.append(DeclareLaunchArgument(row.name, description=description))
        else:
            declared.append(DeclareLaunchArgument(row.name, default_value=row.default, description=description))
    return declared


def refuse_unknown(context, table: Iterable[Argument], launch_file: str) -> None:
    """Raise on a `name:=value` of the command line that `launch_file` does not declare.

    Only when `launch_file` is the file on the command line: a launch file that includes this one
    may pass arguments of its own."""
    if not any(Path(word).name == Path(launch_file).name for word in sys.argv):
        return
    known = sorted(row.name for row in table)
    unknown = [word.split(":=", 1)[0] for word in context.argv if ":=" in word]
    unknown = [name for name in unknown if name not in known and name not in ROS2_LAUNCH_OWN]
    if unknown:
        hints = [
            f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, known, n=1)) else name
            for name in unknown
        ]
        raise ValueError(
            f"{Path(launch_file).name} has no argument {', '.join(hints)}; known arguments: {', '.join(known)}"
        )


def section(params_yaml: str | Path, node: str) -> dict[str, object]:
    """`node`'s parameters in a parameter YAML, as a dict for launch_ros. A file's `inference_node:`
    key only matches a node without a namespace; the dict reaches the node in any namespace."""
    return launch_parameters(yaml_section(params_yaml, node))


def launch_parameters(parameters: dict[str, object]) -> dict[str, object]:
    """`parameters` for a launch_ros Node, strings kept strings (launch_ros would read "true" or
    "1.0" in a dict as YAML and change their type)."""
    from launch_ros.parameter_descriptions import ParameterValue

    return {
        name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
        for name, value in parameters.items()
    }


def node_overrides(arguments: dict[str, str], table: Iterable[Argument], node: str) -> dict[str, object]:
    """`node`'s parameter overrides from the arguments the user gave (bool ones accept true/false only)."""
    return overrides(
        arguments, {row.name: (row.parameter, row.kind) for row in table if row.node == node and row.parameter}
    )


def parse_bool(name: str, text: str) -> bool:
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"launch argument {name}:={text!r} must be true or false") from None


def given(arguments: dict[str, str], name: str) -> bool:
    return arguments.get(name, UNSET) != UNSET


def overrides(arguments: dict[str, str], mapping: dict[str, tuple[str, type]]) -> dict[str, object]:
    """Parameter overrides from the launch arguments the user gave.

    `mapping` is launch argument -> (parameter name, type); bool arguments accept true/false only.
    """
    result: dict[str, object] = {}
    for argument, (parameter, kind) in mapping.items():
        if not given(arguments, argument):
            continue
        text = arguments[argument]
        result[parameter] = parse_bool(argument, text) if kind is bool else kind(text)
    return result


def gamepad_profile(arguments: dict[str, str], share: str) -> str:
    """The gamepad YAML: `gamepad_config:=/path.yaml` wins over `gamepad:=name`."""
    if given(arguments, "gamepad_config"):
        path = Path(arguments["gamepad_config"]).expanduser()
    else:
        path = Path(share) / "config" / "gamepads" / f"{arguments.get('gamepad') or 'xbox'}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (Path(share) / "config" / "gamepads").glob("*.yaml"))
        raise FileNotFoundError(f"gamepad profile {path} does not exist (profiles by name: {', '.join(available)})")
    return str(path)


def params_file(arguments: dict[str, str], share: str, default_name: str) -> str:
    """The node parameter YAML: `params_file:=/path.yaml` replaces the package's config/<default_name>."""
    path = (
        Path(arguments["params_file"]).expanduser()
        if given(arguments, "params_file")
        else (Path(share) / "config" / default_name)
    )
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {path} does not exist")
    return str(path)
