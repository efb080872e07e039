"""Where the package's own files are, from a source checkout or a colcon install."""

from __future__ import annotations

from pathlib import Path


def config_file(name: str) -> Path:
    """A file of this package's config/: the source tree when running from it, else the installed share."""
    source = Path(__file__).resolve().parents[1] / "config" / name
    if source.is_file():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("mobile_vla_ros")) / "config" / name
