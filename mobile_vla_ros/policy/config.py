"""Policy configuration: one dataclass, saved as `policy.json` inside every checkpoint.

Everything the runtime must agree on with training lives here (window size, chunk length,
action time step, image size, prompt template, trained instructions, the base model's identity),
so it is stored once, in the checkpoint, and never re-typed as a node knob. The numbers inputs and
outputs are scaled with are tensors, in normalization.safetensors (policy/normalization.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from mobile_vla_ros.errors import CheckpointError
from mobile_vla_ros.policy.instructions import MAX_INSTRUCTION_CHARS

CONFIG_FILE = "policy.json"
# 5: image mean/std, action range and feature whitening in normalization.safetensors (4: spread over
# policy.json and head.safetensors; 3: whitening from the covariance alone; 2: standardised features).
SCHEMA_VERSION = 5
# Provenance only; every other key must be present: a missing one would be a silent default.
OPTIONAL_KEYS = frozenset({"training"})

# The lab's prompt (DESIGN.md section 1). `{instruction}` is replaced by the instruction text.
DEFAULT_PROMPT_TEMPLATE = "<grounding>An image of a robot {instruction}"
# Text decoder attention projections only: the vision tower stays exactly the base model.
DEFAULT_LORA_TARGETS = r".*text_model\.model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"


@dataclass
class LoraSettings:
    r: int = 32
    alpha: int = 16
    dropout: float = 0.1
    target_modules: str = DEFAULT_LORA_TARGETS


@dataclass
class HeadSettings:
    hidden_dim: int = 256
    lstm_layers: int = 4
    dropout: float = 0.1


@dataclass
class PolicyConfig:
    window_size: int = 8
    chunk_size: int = 10
    action_names: tuple[str, ...] = ("linear_x", "linear_y")
    action_dt: float = 0.1
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    max_instruction_chars: int = MAX_INSTRUCTION_CHARS
    image_size: int = 224  # the base model's; VLAPolicy sets it
    lora: LoraSettings = field(default_factory=LoraSettings)
    head: HeadSettings = field(default_factory=HeadSettings)
    instructions: tuple[str, ...] = ()
    base_model: dict = field(default_factory=dict)  # {"name": ..., "fingerprint": ...}
    # How training frames were made from the camera (data.images.camera_settings): rotation,
    # colour order, resize. The camera window node refuses frames prepared otherwise.
    camera: dict = field(default_factory=dict)
    # Metrics at fp32 and at each run-time precision, from training's validation episodes
    # (policy/precision.py); inference_node refuses a precision whose check failed.
    precision_checks: dict = field(default_factory=dict)
    # Familiarity thresholds calibrated on the validation frames at every checked precision
    # ({"thresholds": {"p99": .., "p99.9": ..}, "validation_frames": n}); {} = no monitor.
    familiarity: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # provenance: data, steps, metrics
    schema_version: int = SCHEMA_VERSION

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def validate(self) -> PolicyConfig:
        problems = []
        if self.window_size < 1:
            problems.append(f"window_size must be >= 1, got {self.window_size}")
        if self.chunk_size < 1:
            problems.append(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not self.action_dt > 0:
            problems.append(f"action_dt must be > 0, got {self.action_dt}")
        if "{instruction}" not in self.prompt_template:
            problems.append("prompt_template must contain '{instruction}'")
        if self.action_dim < 1:
            problems.append("action_names must name at least one action")
        if problems:
            raise CheckpointError("invalid policy configuration: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = CONFIG_FILE) -> PolicyConfig:
        """Strict: unknown keys and missing keys (but `training`) are errors, never defaults."""
        _check_keys(data, cls, where)
        values = dict(data)
        for key, settings in (("lora", LoraSettings), ("head", HeadSettings)):
            if not isinstance(values[key], dict):
                raise CheckpointError(f"{where}: {key!r} must be a mapping, got {values[key]!r}")
            _check_keys(values[key], settings, f"{where} {key!r}")
            values[key] = settings(**values[key])
        for key in ("action_names", "instructions"):
            values[key] = tuple(values[key])
        return cls(**values).validate()

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PolicyConfig:
        """Read `policy.json` alone (no torch), e.g. for the camera window node."""
        path = Path(directory) / CONFIG_FILE
        if not Path(directory).is_dir():
            raise CheckpointError(f"policy checkpoint directory {directory} does not exist")
        if not path.is_file():
            raise CheckpointError(f"{directory} is not a policy checkpoint: {CONFIG_FILE} is missing")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CheckpointError(f"cannot read {path}: {error}") from error
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} is malformed: expected a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise CheckpointError(
                f"{path} has schema_version {version!r}; this package reads schema_version {SCHEMA_VERSION} only"
                + (
                    " (none: not written by mobile-vla, or by a version before schema versions)"
                    if version is None
                    else " (written by an older version: retrain the policy)"
                    if isinstance(version, int) and version < SCHEMA_VERSION
                    else " (written by a newer version of mobile-vla?)"
                )
            )
        try:
            config = cls.from_dict(data, str(path))
        except TypeError as error:
            raise CheckpointError(f"{path} is malformed: {error}") from error
        base = config.base_model if isinstance(config.base_model, dict) else {}
        missing = [key for key in ("name", "fingerprint") if not base.get(key)]
        if missing:
            raise CheckpointError(
                f"{path} names no base model {' and '.join(missing)}: the base model it was trained on cannot be "
                "checked, so it is not loaded"
            )
        return config


def _check_keys(data: dict, settings_class, where: str) -> None:
    known = {f.name for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{where} has unknown keys {unknown}; was it written by a newer version?")
    missing = sorted(known - set(data) - OPTIONAL_KEYS)
    if missing:
        raise CheckpointError(f"{where} lacks required keys {missing}; the checkpoint is incomplete or was edited")
