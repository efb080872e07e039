"""Shared fixtures. ROS traffic of one test run stays on loopback in its own DDS domain, so
parallel runs on one machine never hear each other."""
from __future__ import annotations

import os

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")  # Humble's spelling of the same
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
