"""What a reader needs to reproduce a run: seeds, package versions, machine, code and data identity."""

from __future__ import annotations

import hashlib
import os
import platform
import random
import subprocess

import numpy as np
import pandas as pd

from lib.core.backends import make_deterministic
from lib.core.paths import PROJECT_ROOT
from lib.core.versions import installed_version

STUDY_PACKAGES = (
    "tensorflow",
    "keras",
    "jax",
    "jaxlib",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "statsmodels",
    "pillow",
    "imagehash",
    "matplotlib",
    "seaborn",
    "papermill",
    "nbconvert",
    "pydantic",
)


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and Keras (and through it its backend); with ``deterministic``, turn the
    backend's deterministic operations on (`lib.core.backends.make_deterministic`)."""
    import keras

    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        make_deterministic(keras.backend.backend())


def package_versions(packages=STUDY_PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    return versions | {name: installed_version(name) for name in packages}


def machine_info() -> dict[str, str]:
    info = {
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": str(os.cpu_count()),
    }
    try:
        import psutil

        info["memory_gib"] = f"{psutil.virtual_memory().total / 2**30:.1f}"
    except ImportError:  # pragma: no cover
        pass
    return info


def git_commit() -> str:
    """The project's commit, marked ``-dirty`` when the work tree has uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short=12", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("-dirty" if dirty else "")


def manifest_sha256(manifest: pd.DataFrame) -> str:
    """Identity of a split manifest: relative paths, labels, splits and file contents.

    Absolute paths are left out on purpose, so the same data in another folder or on
    another machine has the same hash.
    """
    columns = ["relpath", "label", "split", "sha256"]
    rows = manifest[columns].sort_values(columns).astype(str).agg("\t".join, axis=1)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()
