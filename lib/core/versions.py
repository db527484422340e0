"""The installed version of a package, the one lookup every record of versions uses."""

from __future__ import annotations

from importlib import metadata

NOT_INSTALLED = "not installed"


def installed_version(package: str) -> str:
    """``package``'s installed version (its distribution's metadata), or "not installed"."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED
