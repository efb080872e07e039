"""Every node's parameters as one table of rows: declared here and nowhere else, read back with
attribute access, and rendered into docs/reference.md (scripts/reference.py), so the reference
cannot drift from the code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from mobile_vla_ros.errors import MobileVlaError

# A writable parameter's check: the new value -> the change to make (ValueError or MobileVlaError: refused).
Change = Callable[[object], Callable[[], None]]


@dataclass(frozen=True)
class NodeParameter:
    """One ROS parameter. `read_only`: fixed for the run (`ros2 param set` is refused); the others
    are checked and applied by the node's entry for them in `accept_changes`, so setting one changes
    what the node does."""

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


def accept_changes(node, table: tuple[NodeParameter, ...], changes: dict[str, Change]) -> None:
    """Let `ros2 param set` change `table`'s writable parameters on `node`, each through its entry in
    `changes`. Every value of a call is checked before any change is made: a refused one refuses the
    call with its reason, and nothing changes. A writable parameter without a change, or a change for
    a read-only one, is refused at start (ValueError)."""
    writable = {row.name for row in table if not row.read_only}
    if set(changes) != writable:
        raise ValueError(f"one change for each writable parameter {sorted(writable)}, got {sorted(changes)}")

    def on_set(parameters) -> SetParametersResult:
        try:
            made = [changes[parameter.name](parameter.value) for parameter in parameters if parameter.name in changes]
        except (ValueError, MobileVlaError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        for change in made:
            change()
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
