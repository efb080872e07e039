"""Launch files, checked without `ros2 launch` (launch/launch_ros have no pip wheels).

Each launch file is executed against small stand-ins for the launch/launch_ros classes it uses.
They only record their arguments; a resolver then evaluates the substitutions for concrete
argument values the way `ros2 launch` would (FindPackageShare -> this source tree, whose config/
and launch/ mirror the installed share directory). For every node that would start we check that
its executable is installed (a console script of this package or a package in package.xml), and
we start this package's nodes in-process with exactly the parameters the launch file gives them
(YAML sections + literal dicts, with their real types) and require each to be declared.
"""
from __future__ import annotations

import ast
import itertools
import os
import sys
import types
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mobile_vla_ros"
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


# ---- stand-ins for the launch API: record, resolve later ---------------------------------------
class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(Recorded):
    pass


class PathJoinSubstitution(Recorded):
    pass


class PythonExpression(Recorded):
    pass


class FindPackageShare(Recorded):
    pass


class ParameterValue(Recorded):
    pass


class IfCondition(Recorded):
    pass


class UnlessCondition(Recorded):
    pass


class DeclareLaunchArgument(Recorded):
    pass


class Node(Recorded):
    pass


class LaunchDescription(Recorded):
    pass


STAND_INS = {
    "launch": {"LaunchDescription": LaunchDescription},
    "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument},
    "launch.conditions": {"IfCondition": IfCondition, "UnlessCondition": UnlessCondition},
    "launch.substitutions": {
        "LaunchConfiguration": LaunchConfiguration, "PathJoinSubstitution": PathJoinSubstitution,
        "PythonExpression": PythonExpression,
    },
    "launch_ros.actions": {"Node": Node},
    "launch_ros.parameter_descriptions": {"ParameterValue": ParameterValue},
    "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
}


def load_launch_description(path: Path) -> LaunchDescription:
    """Run generate_launch_description() with the stand-ins in place of launch/launch_ros."""
    tree = ast.parse(path.read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    unknown = {module for module in imported if module.split(".")[0] in ("launch", "launch_ros")} - set(STAND_INS)
    assert not unknown, f"{path.name} imports {unknown}: add stand-ins for them to this test"
    saved = {name: sys.modules.get(name) for name in STAND_INS}
    try:
        for name, members in STAND_INS.items():
            module = types.ModuleType(name)
            module.__dict__.update(members)
            sys.modules[name] = module
        namespace: dict = {"__file__": str(path), "__name__": "launch_file"}
        exec(compile(tree, str(path), "exec"), namespace)  # noqa: S102 - our own launch file
        return namespace["generate_launch_description"]()
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def resolve(value, arguments: dict[str, str]):
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "".join(str(resolve(part, arguments)) for part in value)
    if isinstance(value, LaunchConfiguration):
        return arguments[value.args[0]]
    if isinstance(value, FindPackageShare):
        assert value.args[0] == PACKAGE, f"FindPackageShare({value.args[0]!r}) points outside this package"
        return str(ROOT)
    if isinstance(value, PathJoinSubstitution):
        return os.path.join(*[resolve(part, arguments) for part in value.args[0]])
    if isinstance(value, PythonExpression):
        return str(eval(resolve(value.args[0], arguments), {"__builtins__": {}}))  # noqa: S307
    if isinstance(value, ParameterValue):
        loaded = yaml.safe_load(resolve(value.args[0], arguments))
        kind = value.kwargs.get("value_type")
        assert kind is None or isinstance(loaded, kind), f"{loaded!r} is not a {kind}"
        return loaded
    raise AssertionError(f"cannot resolve {value!r}")


def condition_holds(condition, arguments) -> bool:
    if condition is None:
        return True
    truth = resolve(condition.args[0], arguments).strip().lower() in ("true", "1")
    return truth if isinstance(condition, IfCondition) else not truth


def flatten(parameters: dict, prefix: str = "") -> dict:
    """Nested YAML keys -> ROS parameter names (a.b.c)."""
    flat = {}
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@dataclass
class LaunchedNode:
    package: str
    executable: str
    name: str
    parameters: dict = field(default_factory=dict)  # name -> value, in the order launch_ros applies them
    sources: list = field(default_factory=list)


def launched_nodes(description: LaunchDescription, arguments: dict[str, str]) -> list[LaunchedNode]:
    nodes = []
    for action in description.args[0]:
        if not isinstance(action, Node) or not condition_holds(action.kwargs.get("condition"), arguments):
            continue
        kw = action.kwargs
        node = LaunchedNode(kw["package"], kw["executable"], kw.get("name", kw["executable"]))
        for entry in kw.get("parameters", []):
            if isinstance(entry, dict):
                node.parameters.update({key: resolve(value, arguments) for key, value in entry.items()})
                node.sources.append("launch file")
                continue
            path = Path(resolve(entry, arguments))
            assert path.is_file(), f"{node.name}: parameter file {path} does not exist"
            content = yaml.safe_load(path.read_text()) or {}
            section = content.get(node.name) or content.get("/**") or {}
            assert section or node.package != PACKAGE, f"{path.name} has no section for {node.name}"
            node.parameters.update(flatten(section.get("ros__parameters", {})))
            node.sources.append(path.name)
        nodes.append(node)
    return nodes


def declared_arguments(description: LaunchDescription) -> dict[str, str | None]:
    return {
        action.args[0]: action.kwargs.get("default_value")
        for action in description.args[0]
        if isinstance(action, DeclareLaunchArgument)
    }


def argument_sets(defaults: dict, given: dict) -> list[dict]:
    """Defaults, plus every combination of the boolean switches, plus every gamepad profile."""
    switches = [name for name, value in defaults.items() if str(value).lower() in ("true", "false")]
    gamepads = sorted(path.stem for path in (ROOT / "config" / "gamepads").glob("*.yaml")) if "gamepad" in defaults else [None]
    sets = []
    for values in itertools.product(["false", "true"], repeat=len(switches)):
        for pad in gamepads:
            arguments = {**defaults, **dict(zip(switches, values)), **given}
            if pad is not None:
                arguments["gamepad"] = pad
            sets.append(arguments)
    return sets


def console_scripts() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no NODES list")


def exec_depends() -> set[str]:
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    return {element.text for tag in ("exec_depend", "depend") for element in root.iter(tag)}


def node_class(executable: str):
    from rclpy.node import Node as RclpyNode

    module = import_module(f"{PACKAGE}.nodes.{executable}")
    assert callable(getattr(module, "main", None)), f"{module.__name__} has no main()"
    classes = [
        value for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, RclpyNode) and value.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"{module.__name__} should define one node class, found {classes}"
    return classes[0]


@pytest.fixture(scope="module")
def argument_values(tiny_checkpoint, tiny_base_model, tmp_path_factory):
    """Values a user would pass for the arguments that have no usable default here."""
    return {
        "model_dir": str(tiny_checkpoint), "base_model_dir": str(tiny_base_model), "device": "cpu",
        "output_dir": str(tmp_path_factory.mktemp("episodes")),
    }


def test_drive_launch_file_exists_with_its_arguments():
    description = load_launch_description(ROOT / "launch" / "drive.launch.py")
    arguments = declared_arguments(description)
    for name in ("model_dir", "base_model_dir", "image_topic", "compressed", "instruction", "device", "dtype",
                 "use_joy", "use_sim", "enable"):
        assert name in arguments, name
    assert arguments["enable"] == "false"  # the robot does not move until told to
    nodes = launched_nodes(description, {**arguments, "model_dir": "m", "base_model_dir": "b"})
    assert [node.executable for node in nodes] == ["camera_window_node", "inference_node"]


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda path: path.name)
def test_every_node_is_installed_and_every_parameter_declared(launch_file, argument_values):
    import rclpy
    from rclpy.parameter import Parameter

    description = load_launch_description(launch_file)
    defaults = declared_arguments(description)
    given = {name: value for name, value in argument_values.items() if name in defaults}
    missing = [name for name, value in defaults.items() if value is None and name not in given]
    assert not missing, f"no test value for required arguments {missing}"
    scripts, depends = console_scripts(), exec_depends()
    checked: dict[tuple, bool] = {}
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        for arguments in argument_sets(defaults, given):
            for launched in launched_nodes(description, arguments):
                if launched.package != PACKAGE:
                    assert launched.package in depends, f"{launched.package} is not an exec_depend in package.xml"
                    continue
                assert launched.executable in scripts, f"{launched.executable} is not a console script in setup.py"
                # Start each node once per set of parameter names and types (values only vary).
                key = (launched.executable, launched.name,
                       tuple(sorted((name, type(value).__name__) for name, value in launched.parameters.items())))
                if key in checked:
                    continue
                overrides = [Parameter(name, value=value) for name, value in launched.parameters.items()]
                node = node_class(launched.executable)(context=context, parameter_overrides=overrides)
                try:
                    undeclared = sorted(name for name in launched.parameters if not node.has_parameter(name))
                    assert not undeclared, f"{launched.name} ({', '.join(launched.sources)}) sets undeclared {undeclared}"
                    for name, value in launched.parameters.items():
                        assert node.get_parameter(name).value == value, name
                finally:
                    if hasattr(node, "stop"):
                        node.stop()
                    node.destroy_node()
                checked[key] = True
    finally:
        rclpy.try_shutdown(context=context)
    assert checked
