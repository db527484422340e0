"""One step as a job: a request (plain data: which notebook, round, params, run folder, key) and its execution.

The runner executes a request in its own process (one job at a time), or starts
``python -m lib.pipeline.job REQUEST.json RESULT.json`` for each of several jobs side by side (`lib.pipeline.schedule`):
a fresh interpreter, never a fork of the runner (a fork copies whatever locks the runner's threads held at that
instant). A job sets its share of the machine (CPU affinity, GPUs), ends when the runner ends
(`lib.core.store.die_with_parent`), runs the step and writes its ``steps.json`` entry, or why it failed, to RESULT.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lib.core import store
from lib.core.config import load_params
from lib.core.paths import RunPaths
from lib.pipeline.execute import execute_step, executed_entry
from lib.pipeline.steps import PlannedStep, find_planned


def step_request(planned: PlannedStep, params_file: Path, run: RunPaths, key: str, backend: str,
                 overrides: dict, environment: dict[str, str] | None = None) -> dict:
    """What a job needs to run ``planned`` into ``run`` under ``key``: plain values, written as JSON."""
    return {"notebook": planned.step.notebook, "round_name": planned.round_name, "params_file": str(params_file),
            "overrides": dict(overrides), "run_dir": str(run.root), "key": key, "backend": backend,
            "environment": dict(environment or {})}


def execute_request(request: dict) -> dict:
    """Run the request's step (`lib.pipeline.execute.execute_step`); its ``steps.json`` entry."""
    params = load_params(request["params_file"], request["overrides"])
    planned = find_planned(params, request["notebook"], request["round_name"])
    return executed_entry(lambda: execute_step(planned, Path(request["params_file"]), RunPaths(Path(request["run_dir"])),
                                               request["key"], request["backend"], request["overrides"],
                                               request["environment"]), request["key"])


def main(argv: list[str] | None = None) -> int:
    """``python -m lib.pipeline.job REQUEST RESULT``; the request also names the runner's process (``parent``) and
    the job's CPU cores (``cores``)."""
    parser = argparse.ArgumentParser(prog="python -m lib.pipeline.job", description="Run one step of a run as a job "
                                     "(started by ./run_all.sh --jobs N, not by hand)")
    parser.add_argument("request", type=Path, help="the step's request (JSON), written by the runner")
    parser.add_argument("result", type=Path, help="where the job writes its steps.json entry, or why it failed")
    args = parser.parse_args(argv)
    request, result_file = json.loads(args.request.read_text()), args.result
    store.die_with_parent(request["parent"])
    if request.get("cores"):
        os.sched_setaffinity(0, request["cores"])
    try:
        store.write_json(result_file, {"done": execute_request(request)})
        return 0
    except BaseException as error:  # a failed cell, an interruption, anything: the runner reports it
        where = request["notebook"] if request["round_name"] is None else f"rounds/{request['round_name']}/{request['notebook']}"
        store.write_json(result_file, {"failed": str(error) or f"{where}: {type(error).__name__}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
