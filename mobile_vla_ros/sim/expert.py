"""A scripted driver that goes around the box on the side it is told and stops at the bottle.

It follows three waypoints at a constant cruise speed: to the chosen side of the box's front
corner, past the box's rear face on that side, then to the front of the bottle. The actions it
produces are what the demonstrations record and what the learned policy has to imitate.
"""

from __future__ import annotations

import math

import numpy as np

from mobile_vla_ros.errors import SimulationError
from mobile_vla_ros.sim.world import SIDES, Layout, RoomConfig

PASS_MARGIN_M = 0.2  # free space between the robot's edge and the box while passing it
WAYPOINT_TOLERANCE_M = 0.08


class ScriptedExpert:
    """Waypoint follower for one layout and one side ('left' or 'right')."""

    def __init__(self, layout: Layout, side: str, room: RoomConfig = RoomConfig(), speed: float = 0.6):
        if side not in SIDES:
            raise SimulationError(f"side must be one of {SIDES}, got {side!r}")
        if not 0 < speed <= room.max_speed:
            raise SimulationError(f"expert speed must be in (0, {room.max_speed}] m/s, got {speed}")
        self.side, self.speed = side, speed
        (bx, by), (hx, hy) = layout.box_center, layout.box_half_size
        clearance = room.robot_radius + PASS_MARGIN_M
        pass_y = by + (1 if side == "left" else -1) * (hy + clearance)
        tx, ty = layout.target
        self.waypoints = [
            (bx - hx - clearance, pass_y),
            (bx + hx + room.robot_radius + 0.05, pass_y),  # just past the rear face: the bottle stays in view
            (tx - 0.5 * room.reach_distance, ty),  # inside the reach radius: the episode ends on the way
        ]
        self._next = 0

    def resume_from(self, x: float, y: float) -> None:
        """Take over a robot already under way: skip the waypoints it has driven past (along x), so
        the expert does not turn back for them."""
        while self._next < len(self.waypoints) - 1 and self.waypoints[self._next][0] <= x:
            self._next += 1

    def act(self, x: float, y: float) -> np.ndarray:
        """(linear_x, linear_y) in m/s for a robot at (x, y)."""
        while self._next < len(self.waypoints) - 1 and self._distance(self._next, x, y) < WAYPOINT_TOLERANCE_M:
            self._next += 1
        wx, wy = self.waypoints[self._next]
        distance = math.hypot(wx - x, wy - y)
        if distance < 1e-9:
            return np.zeros(2, np.float32)
        speed = min(self.speed, distance / 0.1)  # do not overshoot the last waypoint within one 0.1 s step
        return np.array([(wx - x) / distance * speed, (wy - y) / distance * speed], np.float32)

    def _distance(self, index: int, x: float, y: float) -> float:
        wx, wy = self.waypoints[index]
        return math.hypot(wx - x, wy - y)
