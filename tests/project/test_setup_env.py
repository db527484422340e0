"""tools/setup_env.sh: the step both of the README's commands start with."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.core.paths import PROJECT_ROOT
from lib.data.assets import MOBILENET_V2_WEIGHTS_NAME, sha256_of

ROOT = PROJECT_ROOT
SETUP_ENV = ROOT / "tools" / "setup_env.sh"


def _this_venv_matches_the_lock() -> bool:
    """Whether setup_env.sh would reuse the venv running these tests (rather than build one)."""
    stamp = Path(sys.prefix) / ".lock.sha256"
    lock = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    return stamp.is_file() and stamp.read_text().strip().split("+")[0] == lock


def _setup_env(tmp_path: Path, assets: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDY_VENV": sys.prefix, "KERAS_HOME": str(tmp_path / "keras_home"),
           "STUDY_ASSETS": str(assets)}
    return subprocess.run(["bash", str(SETUP_ENV)], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.skipif(not _this_venv_matches_the_lock(), reason="the venv running the tests was not made from this lock")
def test_study_assets_seeds_the_keras_cache_for_both_commands(tmp_path):
    assets = tmp_path / "copies"
    weights = assets / "keras" / "models" / MOBILENET_V2_WEIGHTS_NAME
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    (assets / "SHA256SUMS").write_text(f"{sha256_of(weights)}  keras/models/{weights.name}\n")

    done = _setup_env(tmp_path, assets)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "keras_home" / "models" / weights.name).read_bytes() == b"weights"

    missing = _setup_env(tmp_path, tmp_path / "no such folder")
    assert missing.returncode == 2
    assert "STUDY_ASSETS=" in missing.stderr and "is not a folder" in missing.stderr
