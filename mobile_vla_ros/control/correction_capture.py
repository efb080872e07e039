"""inference_node's takeovers as correction episodes (control.corrections): the writer with its
episode files (data.correction_episodes layout) and the sample taken of each window.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mobile_vla_ros.control.corrections import CorrectionRecorder, CorrectionSettings, CorrectionWriter, Sample
from mobile_vla_ros.data.correction_episodes import CORRECTION_ATTR, CORRECTION_COLUMNS
from mobile_vla_ros.data.episode_recovery import recover_partial_episodes
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.policy.config import PolicyConfig

Log = Callable[[str], None]


def correction_writer(
    directory: Path,
    settings: CorrectionSettings,
    config: PolicyConfig,
    model_dir: str,
    instruction: Callable[[], str],
    info: Log,
    warning: Log,
    error: Log,
) -> CorrectionWriter:
    """Recover the corrections a crash interrupted in `directory`, then record each takeover there under
    the instruction in force when it starts (`instruction()`)."""
    for path in recover_partial_episodes(directory):
        warning(f"recovered a correction interrupted by a crash: {path} (flagged truncated)")

    def open_episode() -> EpisodeWriter:
        text = instruction()
        info(f"takeover: recording a correction for {text!r}")
        return EpisodeWriter(
            directory,
            text,
            1.0 / config.action_dt,
            rotated_180=config.camera.get("rotate_180"),
            extra_columns=CORRECTION_COLUMNS,
            **{CORRECTION_ATTR: True},
            policy_model=str(Path(model_dir).resolve()),
            recorder="mobile_vla_ros inference_node",
        )

    recorder = CorrectionRecorder(settings, config.action_dt, open_episode)
    info(f"recording corrections to {directory}")
    return CorrectionWriter(recorder, info, error)


def correction_sample(
    frame: np.ndarray, stamp_ns: int, executed: np.ndarray, override: np.ndarray | None, proposal: np.ndarray | None
) -> Sample:
    """One sample per window: the person's command (`override`) while they are in charge, else what
    was executed, with the policy's proposal beside it (NaN when it has none)."""
    return Sample(
        frame,
        stamp_ns,
        executed if override is None else override,
        np.full(2, np.nan) if proposal is None else proposal,
        human=override is not None,
    )
