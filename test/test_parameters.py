"""nodes/parameters.accept_changes, the one way a node lets `ros2 param set` change a parameter: every
writable row of a table has its change, and a call applies all of its values or none."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402

from mobile_vla_ros.errors import MobileVlaError  # noqa: E402
from mobile_vla_ros.nodes.inference_tables import PARAMETERS  # noqa: E402
from mobile_vla_ros.nodes.parameters import NodeParameter, accept_changes  # noqa: E402

TABLE = (
    NodeParameter("fixed", 1, "read-only"),
    NodeParameter("limit", 1.0, "writable", read_only=False),
    NodeParameter("names", ["a=b"], "writable", read_only=False),
)


class Node:
    """What accept_changes needs of an rclpy node: where its callback goes."""

    def add_on_set_parameters_callback(self, callback) -> None:
        self.on_set = callback


def node_with(applied: list) -> Node:
    def limit(value):
        if not value > 0:
            raise ValueError(f"limit must be a positive number, got {value}")
        return lambda: applied.append(("limit", value))

    def names(value):
        if not all("=" in entry for entry in value):
            raise MobileVlaError("names entries are 'name=text'")
        return lambda: applied.append(("names", value))

    node = Node()
    accept_changes(node, TABLE, {"limit": limit, "names": names})
    return node


def test_every_writable_parameter_needs_its_change_and_only_those():
    writable = {row.name for row in PARAMETERS if not row.read_only}
    assert {"max_speed", "instruction", "instruction_presets"} <= writable
    with pytest.raises(ValueError, match="one change for each writable parameter"):
        accept_changes(Node(), TABLE, {"limit": lambda value: lambda: None})  # names has none
    with pytest.raises(ValueError, match="one change for each writable parameter"):
        accept_changes(Node(), TABLE, dict.fromkeys(("limit", "names", "fixed"), lambda value: lambda: None))


def test_a_call_applies_all_of_its_values_or_none():
    applied = []
    node = node_with(applied)
    assert node.on_set([Parameter("limit", value=2.0), Parameter("use_sim_time", value=True)]).successful
    assert applied == [("limit", 2.0)]
    for refused, reason in (("limit", "positive number"), ("names", "'name=text'")):
        bad = -1.0 if refused == "limit" else ["x"]
        result = node.on_set(
            [Parameter("limit", value=3.0), Parameter("names", value=["c=d"]), Parameter(refused, value=bad)]
        )
        assert not result.successful and reason in result.reason
    assert applied == [("limit", 2.0)], "nothing of a refused call is applied"
