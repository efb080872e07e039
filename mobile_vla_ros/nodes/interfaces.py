"""Every node's topics and services as one table of rows (`INTERFACES`, next to its `PARAMETERS`):
the node creates its publishers, subscriptions and services with the rows' names,
scripts/reference.py renders the tables into docs/reference.md, and test/test_interfaces.py
starts each node and checks that it has exactly these endpoints, so the reference cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

PUBLISHES = "publishes"
SUBSCRIBES = "subscribes"
SERVES = "service server"

LATCHED = "transient local (latched)"
CAMERA_QOS = "reliability matched to the camera's publisher (nodes/camera_qos.py)"


def type_name(interface_type: type) -> str:
    """The ROS name of a message or service class: sensor_msgs.msg.Image -> "sensor_msgs/msg/Image"."""
    package, kind = interface_type.__module__.split(".")[:2]
    return f"{package}/{kind}/{interface_type.__name__}"


@dataclass(frozen=True)
class Topic:
    """A publisher or subscription. `name` as the node passes it (relative names resolve in the
    node's namespace, `~/` under its name); `qos`: "" (volatile), LATCHED or CAMERA_QOS; `when`:
    (parameter, value) when the topic exists only with that parameter value."""

    name: str
    type: type
    direction: str  # PUBLISHES or SUBSCRIBES
    description: str
    qos: str = ""
    when: tuple[str, object] | None = None


@dataclass(frozen=True)
class Service:
    """A service server, under the same naming rules as Topic."""

    name: str
    type: type
    description: str
    when: tuple[str, object] | None = None
    direction: ClassVar[str] = SERVES
    qos: ClassVar[str] = ""
