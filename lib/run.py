"""Run the study's notebooks in order with papermill: ``python -m lib.run [PARAMS_FILE]``.

This is what ``./run_all.sh`` calls. The params file is validated before any notebook
starts; each notebook runs with that file as its parameter and its executed copy is
written to ``reports/<run>/notebooks/``. The first failing notebook stops the run, and
the message names the notebook and the cell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lib.assets import seed_keras_cache
from lib.config import ParamsError, load_params
from lib.paths import NOTEBOOKS_DIR, run_paths


@dataclass(frozen=True)
class Step:
    notebook: str
    title: str


STEPS = (
    Step("01_data_audit.ipynb", "Data audit"),
    Step("02_cnn.ipynb", "Custom CNN"),
    Step("03_mobilenetv2.ipynb", "MobileNetV2 transfer learning"),
)


class StepFailed(RuntimeError):
    """A notebook failed; the message names it and its failing cell."""


def execute_step(step: Step, params_file: Path, output_dir: Path) -> Path:
    """Execute one notebook with papermill; return the executed copy's path."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / step.notebook
    try:
        papermill.execute_notebook(
            NOTEBOOKS_DIR / step.notebook,
            executed,
            parameters={"params_file": str(params_file)},
            cwd=str(NOTEBOOKS_DIR),
            progress_bar=True,
        )
    except PapermillExecutionError as error:
        raise StepFailed(
            f"{step.notebook} failed in cell {error.cell_index} (execution count {error.exec_count}): "
            f"{error.ename}: {error.evalue}\n"
            f"The executed copy, with the full traceback, is {executed}"
        ) from None
    return executed


def run_study(params_file: str | Path, steps=STEPS) -> dict[str, float]:
    """Validate the params, run every step in order, and return each step's wall time (s)."""
    # TensorFlow's C++ start-up chatter (CUDA probes, CPU flags) is noise in a progress display.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    params = load_params(params_file)
    params_path = Path(params_file).resolve()
    paths = run_paths(params)
    timings: dict[str, float] = {}
    for number, step in enumerate(steps, start=1):
        print(f"[{number}/{len(steps)}] {step.title}: {step.notebook}", flush=True)
        start = time.perf_counter()
        execute_step(step, params_path, paths.notebooks_dir)
        timings[step.notebook] = round(time.perf_counter() - start, 1)
    (paths.root / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.splitlines()[0])
    parser.add_argument("params_file", nargs="?", default="params/default.yaml", help="YAML params file")
    parser.add_argument(
        "--assets",
        metavar="DIR",
        help="a local folder with copies of the downloads (Grocery Store archive, MobileNetV2 weights), "
        "for machines without internet: they are copied into Keras' cache first",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.assets:
            for name, path in seed_keras_cache(args.assets).items():
                print(f"offline copy in Keras' cache: {path}")
        timings = run_study(args.params_file)
    except (ParamsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\nWall time per step:")
    for notebook, seconds in timings.items():
        print(f"  {notebook:<28} {seconds:8.1f} s")
    print(f"  {'total':<28} {time.perf_counter() - started:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
