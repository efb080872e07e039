"""Training configuration: built-in defaults (equal to config/train.yaml, a test keeps them so),
overridden by a YAML file and then by `section.key=value` settings from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.policy.config import PolicyConfig

LOW_PRECISIONS = ("bf16", "fp16")


class TrainConfigError(MobileVlaError, ValueError):
    """A training configuration file or setting that cannot be used."""


# The policy settings a training configuration chooses; the rest of PolicyConfig comes from the
# episodes (action_dt, instructions, camera), the base model and the training run itself.
CHOSEN_POLICY_SETTINGS = ("window_size", "chunk_size", "prompt_template", "lora", "head")


@dataclass
class OptimSection:
    learning_rate: float = 1e-4
    # LoRA adapters and the action token; null = learning_rate. A lower rate than the head's keeps
    # the adapters from learning the shortcut of image-independent features before the head has
    # learned to read the frames (seen on the tiny model: frame-to-frame feature spread fell 8x).
    # 0: LoRA and the action token stay fixed and Kosmos-2 is a frozen feature extractor.
    backbone_learning_rate: float | None = None
    weight_decay: float = 0.01
    huber_delta: float = 1.0


@dataclass
class DataSection:
    val_fraction: float = 0.1
    mirror: bool = True
    clip_length: int = 16
    min_frames: int | None = None
    legacy_action_dt: float = 0.4
    max_idle_s: float = 2.0
    frame_cache_mb: float = 1024
    correction_weight: int = 3


@dataclass
class TrainerSection:
    batch_size: int = 2
    accumulate_grad_batches: int = 1
    max_steps: int = 2000
    max_minutes: float | None = None
    precision: str = "32"
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    seed: int = 0
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 200
    gradient_checkpointing: bool = False


@dataclass
class RuntimePrecisionSection:
    """The backbone precisions the robot may run the policy at (`dtype: auto` picks bf16 or fp16
    on every GPU and on CPUs with native bf16): training measures each one's feature error on
    `noise_frames` training frames, trains the head under it and checks the policy at each."""

    dtypes: list[str] = field(default_factory=lambda: ["bf16", "fp16"])
    noise_frames: int = 256
    # The measured error is scaled by this before the head is trained under it: other GPUs' and CPUs'
    # kernels round differently from the training machine's.
    noise_margin: float = 2.0
    tolerance: float = 0.1  # share of fp32's figure a precision may fall behind (training/precision_checks.py)
    # How far a precision may move the actions from fp32's, as a share of fp32's own error.
    max_drift: float = 0.6


@dataclass
class TrainConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    data: DataSection = field(default_factory=DataSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    runtime_precision: RuntimePrecisionSection = field(default_factory=RuntimePrecisionSection)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["policy"] = {key: values["policy"][key] for key in CHOSEN_POLICY_SETTINGS}
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        config = cls()
        config.update(values)
        return config

    def update(self, values: dict, where: str = "") -> None:
        _merge(self, values, where)
        self.validate()

    def set(self, assignment: str) -> None:
        """Apply one `section.key=value` (value parsed as YAML, e.g. `policy.head.hidden_dim=64`)."""
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise TrainConfigError(f"expected section.key=value, got {assignment!r}")
        value = yaml.safe_load(text)
        for part in reversed(key.strip().split(".")):
            value = {part: value}
        self.update(value)

    def validate(self) -> None:
        checks = [
            (self.policy.window_size >= 1, "policy.window_size must be >= 1"),
            (self.policy.chunk_size >= 1, "policy.chunk_size must be >= 1"),
            (0.0 <= self.data.val_fraction < 1.0, "data.val_fraction must be in [0, 1)"),
            (self.data.clip_length >= 1, "data.clip_length must be >= 1"),
            (self.data.legacy_action_dt > 0, "data.legacy_action_dt must be > 0"),
            (self.data.correction_weight >= 1, "data.correction_weight must be >= 1"),
            (self.optim.learning_rate > 0, "optim.learning_rate must be > 0"),
            (
                self.optim.backbone_learning_rate is None or self.optim.backbone_learning_rate >= 0,
                "optim.backbone_learning_rate must be >= 0 (0 keeps LoRA and the action token fixed)",
            ),
            (
                isinstance(self.runtime_precision.dtypes, list)
                and set(self.runtime_precision.dtypes) <= set(LOW_PRECISIONS),
                f"runtime_precision.dtypes must be a list of {', '.join(LOW_PRECISIONS)}",
            ),
            (self.runtime_precision.noise_frames >= 1, "runtime_precision.noise_frames must be >= 1"),
            (self.runtime_precision.noise_margin >= 0, "runtime_precision.noise_margin must be >= 0"),
            (self.runtime_precision.tolerance >= 0, "runtime_precision.tolerance must be >= 0"),
            (self.runtime_precision.max_drift > 0, "runtime_precision.max_drift must be > 0"),
            (self.trainer.batch_size >= 1, "trainer.batch_size must be >= 1"),
            (self.trainer.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches must be >= 1"),
            (
                self.trainer.max_steps >= 1 or self.trainer.max_minutes,
                "give trainer.max_steps >= 1 or a max_minutes budget",
            ),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise TrainConfigError("invalid training configuration: " + "; ".join(problems))


def _merge(target, values: dict, where: str) -> None:
    if not isinstance(values, dict):
        raise TrainConfigError(f"{where or 'the configuration'} must be a mapping, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(target)}
    if isinstance(target, PolicyConfig):
        known = {key: known[key] for key in CHOSEN_POLICY_SETTINGS}
    for key, value in values.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise TrainConfigError(f"unknown training setting {name!r}; known here: {', '.join(known)}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, name)
        else:
            setattr(target, key, _coerce(value, current, known[key].type, name))


def _coerce(value, current, annotation, name: str):
    """YAML gives 1e-4 as a string and 32 as an int where a string is meant; accept both."""
    if value is None:
        if "None" not in str(annotation):
            raise TrainConfigError(f"{name} cannot be null")
        return None
    kind = type(current) if current is not None else {"int": int, "float": float}.get(str(annotation).split(" ")[0])
    if kind is bool and not isinstance(value, bool):
        raise TrainConfigError(f"{name} must be true or false, got {value!r}")
    if kind in (int, float, str):
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            raise TrainConfigError(f"{name} must be of type {kind.__name__}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != converted:
            raise TrainConfigError(f"{name} must be a whole number, got {value!r}")
        return converted
    return value


def load_train_config(
    path: str | Path | None = None, settings: list[str] = (), base: TrainConfig | None = None
) -> TrainConfig:
    """`base` (default: the built-in defaults), then the YAML file, then each `section.key=value`."""
    config = base or TrainConfig()
    if path is not None:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise TrainConfigError(f"cannot read training config {path}: {error}") from error
        config.update(values)
    for assignment in settings:
        config.set(assignment)
    return config
