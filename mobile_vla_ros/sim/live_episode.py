"""One episode of sim_node's room, advanced to the node's clock as time passes: the held start after a
reset, the command in force and its timeout. Times are integer nanoseconds on that clock.
"""

from __future__ import annotations

from mobile_vla_ros.sim.world import World


class LiveEpisode:
    """The robot stays at the start until `release_ns`; a command older than the timeout counts as zero."""

    def __init__(self, world: World, now_ns: int, release_ns: int):
        self.world = world
        self.release_ns = release_ns
        self.ended_ns: int | None = None
        self._last_ns = now_ns
        self._command = (0.0, 0.0)
        self._command_ns: int | None = None

    def command(self, velocity: tuple[float, float], now_ns: int) -> None:
        """`velocity` is in force from `now_ns` (the previous one until then: call `advance` first)."""
        self._command, self._command_ns = velocity, now_ns

    def advance(self, now_ns: int, command_timeout_ns: float) -> bool:
        """Integrate from the last update to `now_ns` with the command in force; True when the episode
        ended in this stretch (its end time is `ended_ns`)."""
        start_ns = max(self._last_ns, self.release_ns)
        self._last_ns = max(self._last_ns, now_ns)
        if now_ns <= start_ns:
            return False
        fresh = self._command_ns is not None and now_ns - self._command_ns <= command_timeout_ns
        was_running = not self.world.outcome.finished
        self.world.step(self._command if fresh else (0.0, 0.0), (now_ns - start_ns) * 1e-9)
        if was_running and self.world.outcome.finished:
            self.ended_ns = now_ns
            return True
        return False
