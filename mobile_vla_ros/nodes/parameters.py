"""Every node's parameters as one table of rows: declared here and nowhere else, read back with
attribute access, and rendered into docs/reference.md (scripts/reference.py), so the reference
cannot drift from the code."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from rcl_interfaces.msg import ParameterDescriptor


@dataclass(frozen=True)
class NodeParameter:
    """One ROS parameter. `read_only`: fixed for the run (`ros2 param set` is refused); the others
    are read again where they are used, so setting one changes what the node does."""

    name: str
    default: object
    description: str
    read_only: bool = True

    @property
    def attribute(self) -> str:
        """The name in the namespace `declare_parameters` returns ("quality.max_idle_s" -> "quality_max_idle_s")."""
        return self.name.replace(".", "_")


def declare_parameters(node, table: tuple[NodeParameter, ...]) -> SimpleNamespace:
    """Declare `table` on `node` (values from the YAML or the command line override the defaults)
    and return the values as attributes."""
    values = {}
    for row in table:
        descriptor = ParameterDescriptor(description=row.description, read_only=row.read_only)
        values[row.attribute] = node.declare_parameter(row.name, row.default, descriptor).value
    return SimpleNamespace(**values)
