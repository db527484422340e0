"""A stand-in for ``python -m lib.pipeline.job`` in the tests of ``--jobs`` (tests/pipeline/test_schedule.py): each step's
notebook is replaced by what ``STAND_IN`` names, with its marker files in ``STAND_IN_DIR``. Jobs are fresh
processes, so the stand-in comes in as the job's module (`lib.pipeline.schedule.JOB_MODULE`), not as a patch.

- ``meet``: the first round's two model steps each wait, bounded, until the other has started, which they can only
  do side by side; every step writes the CPU cores it ran on.
- ``fail-beside``: the first round's MobileNetV2 step fails while its CNN step is still running.
"""

import json
import os
import sys
import time
from pathlib import Path

from lib.pipeline import job
from lib.pipeline.execute import StepFailed

MODELS = {"02_cnn.ipynb": "cnn", "03_mobilenetv2.ipynb": "mobilenetv2"}


def meet(marker: Path, other: Path, seconds: float = 120) -> None:
    """Leave ``marker`` and wait for ``other``: only two steps running at the same time both get past this."""
    marker.write_text("here")
    deadline = time.monotonic() + seconds
    while not other.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{other.name} never came: the steps did not run side by side")
        time.sleep(0.05)


def stand_in(planned, params_file, run_paths, key=None, backend=None, overrides=None, environment=None):
    folder, scenario = Path(os.environ["STAND_IN_DIR"]), os.environ["STAND_IN"]
    model = MODELS.get(planned.step.notebook) if planned.round_name == "seed-42" else None
    other = {"cnn": "mobilenetv2", "mobilenetv2": "cnn"}.get(model)
    if scenario == "meet":
        if model:
            meet(folder / model, folder / other)
        (folder / f"cores-{planned.label.replace('/', '-')}").write_text(json.dumps(sorted(os.sched_getaffinity(0))))
    elif scenario == "fail-beside" and model:
        meet(folder / model, folder / other)
        if model == "mobilenetv2":
            (folder / "failing").write_text("now")
            raise StepFailed(f"{planned.label} failed in cell 3: ValueError: a stand-in's failure")
        meet(folder / "beside", folder / "failing")  # still running when its neighbour fails
    planned.executed_copy(run_paths).parent.mkdir(parents=True, exist_ok=True)
    planned.executed_copy(run_paths).write_text("{}")


if __name__ == "__main__":
    job.execute_step = stand_in
    sys.exit(job.main())
