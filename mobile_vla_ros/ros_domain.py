"""Keeping a self-contained ROS graph to itself: a private DDS domain and localhost-only discovery.

`mobile-vla demo` (and `--corrections`), `bench-drive`, `bench-record` and the test suite start
whole ROS graphs of their own: a simulator publishing cmd_vel, a camera, a recorder. Two of them on
one machine must not hear each other, and none may reach another machine's robot. So each

- discovers on localhost only: `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` (Iron and newer) and
  `ROS_LOCALHOST_ONLY=1` (Humble's spelling; newer distributions ignore it when the range is set);
- runs on a domain id nobody else on this machine holds: ids 1..101 and 215..232 (those whose
  DDS ports are valid on every platform; 0 is everybody's default) are tried in turn, starting at
  one derived from the process id, and the first whose lock file (`<tmp>/mobile_vla_ros_domains/
  <id>.lock`, an exclusive non-blocking flock) can be taken is kept for as long as the claim lives.
  The kernel drops the lock when the process ends, crash or not, so a stale file never blocks an id.
  The caller's own ROS_DOMAIN_ID is skipped: the graph must be private from its caller too.

`drive.launch.py use_sim:=true` uses only `LOCALHOST_ONLY_ENV` and keeps the user's domain: the
README tells the user to `ros2 topic pub /instruction` to it from another shell.

Pure Python (no rclpy): the launch file, the CLI and the test suite's conftest import it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mobile_vla_ros.errors import MobileVlaError

LOCALHOST_ONLY_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}
DOMAIN_IDS = (*range(1, 102), *range(215, 233))
LOCK_DIR = Path(tempfile.gettempdir()) / "mobile_vla_ros_domains"


@dataclass
class PrivateDomain:
    domain_id: int
    _fd: int | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The variables a process (and rclpy in it, before init) needs to join this graph."""
        return {**LOCALHOST_ONLY_ENV, "ROS_DOMAIN_ID": str(self.domain_id)}

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def claim_private_domain(lock_dir: Path = LOCK_DIR) -> PrivateDomain:
    """A domain id held for this process until `release()` (or the process's end)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)  # shared by every user of the machine, like /tmp
    except OSError:
        pass
    own = os.environ.get("ROS_DOMAIN_ID", "").strip()
    start = os.getpid() % len(DOMAIN_IDS)
    for k in range(len(DOMAIN_IDS)):
        domain_id = DOMAIN_IDS[(start + k) % len(DOMAIN_IDS)]
        if str(domain_id) == own:
            continue
        try:
            fd = os.open(lock_dir / f"{domain_id}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # another user's file we may not open: that id is theirs
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return PrivateDomain(domain_id, fd)
    raise MobileVlaError(f"no free ROS domain id on this machine: all {len(DOMAIN_IDS)} are held ({lock_dir})")


def use_private_domain() -> PrivateDomain:
    """Claim a private domain and put it into this process's environment (call before rclpy.init and
    before starting node processes, which inherit it)."""
    domain = claim_private_domain()
    os.environ.update(domain.env)
    return domain
