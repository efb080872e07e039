"""Errors the package raises on purpose. Each message says what was wrong and what to do."""


class MobileVlaError(Exception):
    """Base class: the CLI prints these as one line instead of a traceback."""


class CheckpointError(MobileVlaError):
    """A policy checkpoint directory that is missing, incomplete or unreadable."""


class BaseModelError(MobileVlaError):
    """A base model directory that is missing or not a Kosmos-2 model."""


class BaseModelMismatchError(BaseModelError):
    """The checkpoint was trained on a different base model than the one given."""


class SettingError(MobileVlaError, ValueError):
    """A device, dtype or quantization setting that this machine or this model cannot use."""


class InstructionError(MobileVlaError, ValueError):
    """An empty, unknown or too long instruction."""


class ImageError(MobileVlaError, ValueError):
    """A frame that cannot be turned into an RGB image (malformed message, wrong shape or dtype)."""


class NonFiniteOutputError(MobileVlaError, ArithmeticError):
    """The model produced NaN or infinite actions."""


class EpisodeError(MobileVlaError):
    """An episode file that cannot be read or is not an episode."""


class DatasetError(MobileVlaError):
    """A dataset with no usable episodes."""


class SimulationError(MobileVlaError, ValueError):
    """A simulator layout, configuration or command that cannot be used."""


class RobovlmsImportError(MobileVlaError):
    """A RoboVLMs checkpoint that cannot be mapped onto the Kosmos-2 base model."""


class UnsafeCheckpointError(RobovlmsImportError):
    """A checkpoint that could only be loaded by running code it names; refused unread."""
