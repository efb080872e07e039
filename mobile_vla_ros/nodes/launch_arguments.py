"""What the launch files do with their arguments, kept out of them so both share it and it is testable.

The YAML under config/ is the one home of every parameter value. A launch argument the user did not
give is the empty string and leaves the node alone; one the user gave overrides one named key
(nav2_bringup's rule). Gamepad profiles are chosen by name (config/gamepads/<name>.yaml) or by path.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mobile_vla_ros.policy.config import PolicyConfig

UNSET = ""
_BOOLEANS = {"true": True, "false": False}


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


def lockstep_sim_parameters(drive_params_file: str | Path, model_dir: str | Path) -> dict[str, object]:
    """sim_node's parameters for lockstep: one physics step per control tick of inference_node (from
    the drive parameter file in use) and one camera frame per model frame (from the checkpoint)."""
    drive = yaml.safe_load(Path(drive_params_file).read_text())
    control_rate_hz = float(drive["inference_node"]["ros__parameters"]["control_rate_hz"])
    return {
        "lockstep": True,
        "physics_rate_hz": control_rate_hz,
        "camera_rate_hz": 1.0 / PolicyConfig.load(model_dir).action_dt,
    }
