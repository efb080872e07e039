"""The scripted person of `mobile-vla demo --corrections`: when they take over from the policy, and
what they command while they are in charge. Pure Python (the conductor in demo/closed_loop.py feeds
it poses and publishes its commands on `cmd_vel_teleop`).

A person watching the robot takes over when it is about to go wrong, not after: when, keeping its
current velocity, it would touch the box, a wall or the bottle within `horizon_s` ("collision");
when it approaches the box heading for the side the instruction did not ask for ("wrong side");
or, past the box and closing in on the bottle, when its course passes beside the bottle instead
of reaching it ("missing the bottle": the weak policy's commonest failure is to drive past the
bottle into the far wall, and a takeover at the wall comes too late to reach the bottle).

The person then drives like the scripted expert from where the robot is, and hands back after at
least `min_hold_s` once the robot is past the box on the asked side (or, when the takeover began
behind the box, once nothing threatens any more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mobile_vla_ros.errors import SimulationError
from mobile_vla_ros.sim.expert import ScriptedExpert
from mobile_vla_ros.sim.world import SIDES, Layout, RoomConfig, World

COLLISION = "collision"
WRONG_SIDE = "wrong side"
MISSING_TARGET = "missing the bottle"


@dataclass(frozen=True)
class TakeoverRules:
    horizon_s: float = 0.6  # straight-line look-ahead for collisions
    step_s: float = 0.05  # resolution of that look-ahead
    judge_side_within_m: float = 0.8  # the side is judged once the robot is this close to the box front
    side_margin_m: float = 0.1  # predicted pass this far on the asked side of the box centre counts as right
    max_extrapolation_s: float = 2.0  # the pass is predicted at most this far ahead
    moving_speed: float = 0.1  # m/s; slower counts as standing (no side or course judged)
    judge_target_within_m: float = 0.8  # the course to the bottle is judged this close to it (along x) ...
    turn_margin_m: float = 0.1  # ... once the robot is this far clear of the box (it may still turn there)
    reach_margin_m: float = 0.1  # a course passing the bottle closer than reach_distance minus this reaches it
    min_hold_s: float = 1.5  # a takeover lasts at least this long
    expert_speed: float = 0.6  # m/s, the demonstrations' speed


def takeover_reason(
    world: World, side: str, x: float, y: float, vx: float, vy: float, rules: TakeoverRules = TakeoverRules()
) -> str | None:
    """Why a person would take over from a robot at (x, y) moving at (vx, vy) m/s on ``side``'s
    task in ``world``'s layout: COLLISION, WRONG_SIDE, MISSING_TARGET, or None when it looks fine."""
    if side not in SIDES:
        raise SimulationError(f"side must be one of {SIDES}, got {side!r}")
    layout, room = world.layout, world.room
    (bx, by), (hx, _) = layout.box_center, layout.box_half_size
    tx, ty = layout.target
    steps = max(1, math.ceil(rules.horizon_s / rules.step_s))
    for index in range(1, steps + 1):
        t = index * rules.horizon_s / steps
        px, py = x + vx * t, y + vy * t
        if px < tx and math.hypot(tx - px, ty - py) <= room.reach_distance:
            break  # it reaches the bottle first: the episode ends there
        if world.contact(px, py):
            return COLLISION
    if math.hypot(vx, vy) < rules.moving_speed:
        return None  # a robot standing still is heading nowhere yet
    if x > bx + hx:
        if x > bx + hx + room.robot_radius + rules.turn_margin_m:  # clear of the box: free to turn
            return _course_to_target(layout, room, x, y, vx, vy, rules)
        return None
    box_front = bx - hx - room.robot_radius
    if x < box_front - rules.judge_side_within_m:
        return None
    time_to_front = 0.0 if x >= box_front or vx <= 0 else min((box_front - x) / vx, rules.max_extrapolation_s)
    passing_y = y + vy * time_to_front
    toward_asked_side = (passing_y - by) * (1.0 if side == "left" else -1.0)
    return WRONG_SIDE if toward_asked_side < rules.side_margin_m else None


def _course_to_target(layout: Layout, room: RoomConfig, x, y, vx, vy, rules: TakeoverRules) -> str | None:
    """MISSING_TARGET when the straight course from (x, y) never comes within reach of the bottle
    before passing it (the world counts a reach only in front of the bottle)."""
    tx, ty = layout.target
    if x >= tx or tx - x > rules.judge_target_within_m:
        return None
    if vx <= 0:
        return MISSING_TARGET  # moving away from the bottle or only sideways, past the box
    # closest approach to the bottle on the way to its x
    t = min(max(((tx - x) * vx + (ty - y) * vy) / (vx * vx + vy * vy), 0.0), (tx - x) / vx)
    closest = math.hypot(x + vx * t - tx, y + vy * t - ty)
    return MISSING_TARGET if closest > room.reach_distance - rules.reach_margin_m else None


class TakeoverSupervisor:
    """One trial's person: `command(t, x, y, vx, vy)` returns what to publish on `cmd_vel_teleop`
    (None while the policy is in charge). Counts takeovers and keeps their reasons."""

    def __init__(
        self, layout: Layout, side: str, room: RoomConfig = RoomConfig(), rules: TakeoverRules = TakeoverRules()
    ):
        self.world = World(layout, room)  # only for its geometry; never stepped
        self.side, self.rules = side, rules
        self._expert: ScriptedExpert | None = None
        self._since = 0.0
        self._began_past_box = False
        self.reasons: list[str] = []

    @property
    def takeovers(self) -> int:
        return len(self.reasons)

    @property
    def in_charge(self) -> bool:
        return self._expert is not None

    def command(self, t: float, x: float, y: float, vx: float, vy: float) -> np.ndarray | None:
        if self._expert is None:
            reason = takeover_reason(self.world, self.side, x, y, vx, vy, self.rules)
            if reason is None:
                return None
            self.reasons.append(reason)
            self._expert = ScriptedExpert(self.world.layout, self.side, self.world.room, self.rules.expert_speed)
            self._expert.resume_from(x, y)
            self._since = t
            self._began_past_box = x > self._box_rear
        elif self._may_hand_back(t, x, y):
            self._expert = None
            return None
        return self._expert.act(x, y)

    @property
    def _box_rear(self) -> float:
        (bx, _), (hx, _) = self.world.layout.box_center, self.world.layout.box_half_size
        return bx + hx + self.world.room.robot_radius

    def _may_hand_back(self, t: float, x: float, y: float) -> bool:
        if t - self._since < self.rules.min_hold_s:
            return False
        if self._began_past_box:
            vx, vy = self._expert.act(x, y)
            return takeover_reason(self.world, self.side, x, y, float(vx), float(vy), self.rules) is None
        return x > self._box_rear
