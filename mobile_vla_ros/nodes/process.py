"""The one `main()` of every node process: start, spin, shut down cleanly, exit with a status.

A node that cannot start (bad parameters, a missing checkpoint, an unreadable directory) logs one
line saying why and the process exits with status 1 before it has published anything.
"""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from mobile_vla_ros.errors import MobileVlaError

STARTUP_ERRORS = (MobileVlaError, ValueError, OSError)


def run_node(name: str, factory: Callable[[], Node], on_shutdown: Callable[[Node], None] | None = None,
             args=None) -> int:
    rclpy.init(args=args)
    try:
        node = factory()
    except STARTUP_ERRORS as error:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if on_shutdown is not None:
            on_shutdown(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
