"""The tiny study that the slow tests share, built once per test session in a process of its own.

`tests/conftest.py` starts it when collection finds a test that asks for the ``tiny_study`` fixture, so that it
runs while the other tests do (and, with several pytest workers, once for all of them); the fixture waits for it.

    python tests/shared_study.py FOLDER PARENT_PID

writes ``FOLDER/study.json`` (the params file, the run folder, the steps record, the dataset's digest) when the
study is published, or ``FOLDER/failed.txt`` with the error. The process ends with the test session
(``PARENT_PID``), taking its notebook kernels with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from helpers import TINY_CLASSES, make_class_folders, tree_digest, write_tiny_study_params

RESULT, FAILURE, LOG = "study.json", "failed.txt", "study.log"


def start(folder: Path) -> bool:
    """Start building the study into ``folder`` unless another process of this session already has: True when
    this call started it."""
    try:
        folder.mkdir(parents=True)  # atomic: the first worker to get here builds, the others wait for it
    except FileExistsError:
        return False
    with (folder / LOG).open("w") as log:
        process = subprocess.Popen([sys.executable, __file__, str(folder), str(os.getpid())], stdout=log,
                                   stderr=subprocess.STDOUT, env=os.environ | {"PYTHONPATH": _python_path()})
    (folder / "pid").write_text(str(process.pid))
    return True


def _python_path() -> str:
    tests, root = Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]
    return os.pathsep.join([str(root), str(tests), os.environ.get("PYTHONPATH", "")])


def wait_for(folder: Path) -> tuple[Path, Path, dict, tuple[Path, dict]]:
    """What the study in ``folder`` gives the fixture, once it is published; its log in the error when it failed."""
    while not (folder / RESULT).exists():
        failed = folder / FAILURE
        pid = int((folder / "pid").read_text()) if (folder / "pid").exists() else None
        if failed.exists() or (pid is not None and not _alive(pid) and not (folder / RESULT).exists()):
            raise RuntimeError(f"the shared tiny study failed ({folder}):\n"
                               + (failed.read_text() if failed.exists() else (folder / LOG).read_text()[-5000:]))
        time.sleep(0.5)
    made = json.loads((folder / RESULT).read_text())
    return (Path(made["params_file"]), Path(made["run"]), made["record"],
            (Path(made["dataset"]), made["dataset_digest"]))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (not ended, not a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def build(folder: Path) -> None:
    from lib import run

    images = make_class_folders(folder / "images", TINY_CLASSES)
    params_file = write_tiny_study_params(folder, images, "tiny", evaluation={"seeds": [1, 2]})
    digest = tree_digest(images)
    record = run.run_study(params_file)
    made = {"params_file": str(params_file), "run": str(folder / "reports" / "tiny"), "record": record,
            "dataset": str(images), "dataset_digest": digest}
    (folder / f"{RESULT}.partial").write_text(json.dumps(made))
    (folder / f"{RESULT}.partial").rename(folder / RESULT)


if __name__ == "__main__":
    from lib.core.store import die_with_parent

    folder, parent = Path(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent)
    try:
        build(folder)
    except BaseException:
        (folder / FAILURE).write_text(traceback.format_exc())
        raise
