"""Quality checks of one episode: what is wrong with it, and which training windows to leave out.

Pure functions of the per-frame arrays an episode file holds (actions, flags, frame digests), so
the recorder (when it saves), `mobile-vla import-bag`, `mobile-vla inspect` and `mobile-vla train`
all judge an episode by the same rules. The recorder stores its verdicts in the file (attribute
`quality`, JSON); training recomputes them from the arrays with its own window size, so files
recorded before the checks existed are judged too (legacy files have no digests: no frozen check).

Verdicts and what training does with them (the documented rule):

    code                 severity  training
    too_short            reject    episode skipped (fewer frames than one window)
    instruction_missing  reject    episode skipped
    camera_lag           trim      windows ending at a lagged frame left out
    command_stale        trim      windows ending at a stale-command frame left out
    frozen_image         trim      windows ending at a frame identical to the one before while moving
    idle_stretch         trim      in a motionless run longer than max_idle_s, windows after its first
                                   max_idle_s are left out (the first ones still teach "stand still")
    saturated            warn      kept (commands pinned at saturation_speed for most of the motion)
    instruction_unknown  warn      kept (names neither side: not mirrored, not a left/right preset)

An episode left with no usable window is skipped as well.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from mobile_vla_ros.policy.instructions import instruction_side

IDLE_SPEED = 1e-3  # |action| below this in every component counts as standing still
REJECT, TRIM, WARN = "reject", "trim", "warn"


@dataclass(frozen=True)
class QualityRules:
    window_size: int = 8  # an episode shorter than one window teaches nothing
    max_idle_s: float = 2.0  # longer motionless runs are flagged (and trimmed in training)
    saturation_speed: float = 1.15  # m/s: a linear command at this magnitude is pinned at the limit
    max_saturated_fraction: float = 0.5  # of the moving frames


@dataclass(frozen=True)
class Verdict:
    code: str
    severity: str  # reject | trim | warn
    frames: int  # frames concerned (all of them for reject verdicts)
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpisodeQuality:
    verdicts: list[Verdict]
    usable: np.ndarray  # (T,) bool: the training window ending at this frame may be used

    @property
    def rejected(self) -> bool:
        return any(verdict.severity == REJECT for verdict in self.verdicts) or not self.usable.any()

    def summary(self) -> str:
        """One short line, e.g. 'ok' or 'camera_lag 3 frames; idle_stretch 40 frames'."""
        if not self.verdicts:
            return "ok"
        return "; ".join(f"{verdict.code} {verdict.frames} frames" for verdict in self.verdicts)

    def to_json(self) -> str:
        return json.dumps([verdict.to_dict() for verdict in self.verdicts])


def verdicts_from_json(text: str) -> list[Verdict]:
    return [Verdict(**item) for item in json.loads(text)] if text else []


def moving_mask(actions: np.ndarray) -> np.ndarray:
    return np.any(np.abs(np.asarray(actions)) >= IDLE_SPEED, axis=1)


def frozen_mask(digests: np.ndarray | None, actions: np.ndarray) -> np.ndarray:
    """Frames identical to the frame before while the robot was commanded to move.

    A still robot may well see the same picture (a simulator does); a moving one cannot.
    """
    frozen = np.zeros(len(actions), bool)
    if digests is not None and len(digests) > 1:
        frozen[1:] = np.asarray(digests[1:]) == np.asarray(digests[:-1])
    return frozen & moving_mask(actions)


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of every run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def check_episode(
    actions: np.ndarray,
    instruction: str | None,
    sample_rate_hz: float | None,
    rules: QualityRules = QualityRules(),
    camera_lag: np.ndarray | None = None,
    command_stale: np.ndarray | None = None,
    frame_digests: np.ndarray | None = None,
    event_step_s: float = 0.4,
) -> EpisodeQuality:
    """Judge one episode. `sample_rate_hz` None (the lab's event-driven files) uses `event_step_s`."""
    actions = np.asarray(actions, np.float32).reshape(-1, 3)
    count = len(actions)
    step_s = 1.0 / sample_rate_hz if sample_rate_hz else event_step_s
    verdicts: list[Verdict] = []
    usable = np.ones(count, bool)

    if count < rules.window_size:
        verdicts.append(
            Verdict("too_short", REJECT, count, f"{count} frames, fewer than one window of {rules.window_size}")
        )
    if not instruction or not instruction.strip():
        verdicts.append(Verdict("instruction_missing", REJECT, count, "no instruction"))
    elif instruction_side(instruction) is None:
        verdicts.append(
            Verdict(
                "instruction_unknown",
                WARN,
                count,
                "the instruction names neither left nor right (not mirrored in training)",
            )
        )

    lagged = np.zeros(count, bool) if camera_lag is None else np.asarray(camera_lag, bool)[:count]
    for code, mask, what in (
        ("camera_lag", lagged, "frames were not fresh when sampled"),
        ("command_stale", command_stale, "frames had a motion command that nobody renewed"),
        # a lagged sample repeats the previous message: that is camera lag, not a frozen camera
        (
            "frozen_image",
            frozen_mask(frame_digests, actions) & ~lagged,
            "frames identical to the one before while moving",
        ),
    ):
        mask = np.zeros(count, bool) if mask is None else np.asarray(mask, bool)[:count]
        if mask.any():
            verdicts.append(Verdict(code, TRIM, int(mask.sum()), f"{int(mask.sum())} of {count} {what}"))
            usable &= ~mask

    keep = max(1, int(round(rules.max_idle_s / step_s)))
    long_runs = [(a, b) for a, b in true_runs(~moving_mask(actions)) if b - a > keep]
    if long_runs:
        longest = max(b - a for a, b in long_runs) * step_s
        trimmed = sum(b - a - keep for a, b in long_runs)
        verdicts.append(
            Verdict(
                "idle_stretch",
                TRIM,
                trimmed,
                f"{len(long_runs)} motionless stretches over {rules.max_idle_s:g} s "
                f"(longest {longest:.1f} s); {trimmed} frames past the first {rules.max_idle_s:g} s",
            )
        )
        for start, stop in long_runs:
            usable[start + keep : stop] = False

    moving = moving_mask(actions)
    if moving.any():
        pinned = np.any(np.abs(actions[:, :2]) >= 0.99 * rules.saturation_speed, axis=1) & moving
        if pinned.sum() > rules.max_saturated_fraction * moving.sum():
            verdicts.append(
                Verdict(
                    "saturated",
                    WARN,
                    int(pinned.sum()),
                    f"{int(pinned.sum())} of {int(moving.sum())} moving frames command "
                    f">= {rules.saturation_speed:g} m/s (pinned at the limit)",
                )
            )
    if any(verdict.severity == REJECT for verdict in verdicts):
        usable[:] = False
    return EpisodeQuality(verdicts, usable)
