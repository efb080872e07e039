"""The one `main()` of every node process: start, spin, shut down cleanly, exit with a status.

A node that cannot start (bad parameters, a missing checkpoint, an unreadable directory) logs one
line saying why and the process exits with status 1 before it has published anything.

SIGINT (Ctrl-C, which a terminal sends to `ros2 launch` and every node at once) and SIGTERM (what
`ros2 launch` sends a node that outlives its SIGINT) end the spin loop, and then — with the context
still up, so messages still go out — the node's `on_shutdown` runs: the inference and teleop nodes
leave a zero command on the wire, the recorder saves the episode it was recording. rclpy's own
signal handler would shut the context down first, so it is switched off here.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import rclpy
from geometry_msgs.msg import Twist
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from mobile_vla_ros.errors import MobileVlaError

STARTUP_ERRORS = (MobileVlaError, ValueError, OSError)
SPIN_PERIOD_S = 0.1  # how soon a stop request is noticed when no callback is due
FINAL_STOP_ACK_S = 0.5


def run_node(
    name: str, factory: Callable[[], Node], on_shutdown: Callable[[Node], None] | None = None, args=None
) -> int:
    stop_requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        try:
            node = factory()
        except STARTUP_ERRORS as error:
            rclpy.logging.get_logger(name).fatal(f"cannot start: {error}")
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop_requested.is_set():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        except ExternalShutdownException:
            pass
        finally:
            if on_shutdown is not None and rclpy.ok():
                on_shutdown(node)
            executor.shutdown()
            node.destroy_node()
        return 0
    finally:
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def publish_final_stop(publisher) -> None:
    """Publish a zero Twist and wait (briefly) until reliable subscribers have it: the process is
    about to end, and a base must not keep the last non-zero command."""
    publisher.publish(Twist())
    publisher.wait_for_all_acked(Duration(seconds=FINAL_STOP_ACK_S))
