"""Run the whole study: ``python -m lib.run [PARAMS_FILE]`` (what ``./run_all.sh`` calls).

1. The params file is validated before anything runs.
2. The run's lock is taken (`lib.pipeline.store`): one process writes a run at a time; a second one stops at once
   naming the first, or waits behind it (``--wait``).
3. The notebooks run in order with papermill (the model notebooks once per evaluation round), each with the params
   file and a staging folder (``reports/.staging-<run_name>``, a copy of the published run) as parameters; their
   executed copies and artefacts go there. A step whose inputs (its notebook's code, the ``lib`` modules it imports,
   package versions, backend, hardware and precision, the params it uses, the raw data's listing and the artefacts
   it reads: `lib.pipeline.keys`) are unchanged since the previous run is reused instead (``--force`` redoes
   everything); ``steps.json`` records which.
4. The executed report notebook is rendered to HTML and PDF.
5. Only then is the run published: one atomic switch of ``reports/<run_name>`` to the finished folder, and its
   report copied to ``reports/report.html`` and ``reports/report.pdf``.

A failure or an interruption at any step leaves the previous report and artefacts as they were, exits non-zero,
and names the notebook and the cell that failed. The next run resumes: the steps the unfinished run completed
(kept in its staging folder) are reused when their inputs are unchanged.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import shutil
import sys
import time
from pathlib import Path

from lib.core import store
from lib.core.backends import resolve_backend
from lib.core.config import ParamsError, load_params
from lib.core.distribution import Coordinates, DistributionError, check_backend, coordinates
from lib.core.overrides import dotted_overrides, override_words
from lib.core.paths import RunPaths, run_paths
from lib.data.assets import seed_keras_cache
from lib.pipeline import store as run_store
from lib.pipeline.execute import StepFailed
from lib.pipeline.job import step_request
from lib.pipeline.keys import RunInputs, run_inputs, step_key
from lib.pipeline.progress import RunProgress
from lib.pipeline import tracking
from lib.pipeline.schedule import run_steps
from lib.pipeline.sweep import run_sweep
from lib.pipeline.steps import REPORT_STEP, STEPS, PlannedStep, planned_steps
from lib.pipeline.interactive import remove_scratch_runs
from lib.report import render as rendering


def remove_unplanned_rounds(run: RunPaths, plan: list[PlannedStep]) -> list[str]:
    """Delete the round folders no step of ``plan`` runs for; return their names.

    They come from a run with other evaluation params (copied from the last published run, or
    left in an unfinished staging folder), and would otherwise be published with this one.
    """
    planned = {p.round_name for p in plan if p.round_name is not None}
    stale = sorted(f for f in run.rounds_dir.iterdir() if f.name not in planned) if run.rounds_dir.is_dir() else []
    for folder in stale:
        shutil.rmtree(folder)
    return [folder.name for folder in stale]


def process_run(params, index: int) -> RunPaths:
    """Where process ``index`` (> 0) of a run across processes keeps its own copy of the run: under
    ``reports/.processes/``, never published. It is what that process reuses next time, as process 0 reuses the
    published run, so that every process reuses the same steps."""
    return run_paths(params, params.reports_dir / ".processes" / f"{params.run_name}-{index}")


class StepBook:
    """What the staging folder records of its steps while the run goes on: ``progress.json`` (the steps finished,
    with their keys, and those running, with none, so that a resumed run reruns them) and ``steps.json``. Each is
    written whole (`lib.core.store.write_json`) after every change."""

    def __init__(self, staging: RunPaths, previous: dict, plan: list[PlannedStep], params, inputs: RunInputs,
                 force: bool, watch: RunProgress):
        self.staging, self.previous, self.plan, self.params, self.inputs = staging, previous, plan, params, inputs
        self.force, self.watch = force, watch
        self.record: dict[str, dict] = {}
        self.running: set[str] = set()

    def save(self) -> None:
        store.write_json(run_store.progress_of(self.staging.root),
                         self.previous | self.record | {label: {"key": None} for label in self.running})
        store.write_json(self.staging.steps, self.in_plan_order())  # the report quotes these

    def in_plan_order(self) -> dict[str, dict]:
        return {p.label: self.record[p.label] for p in self.plan if p.label in self.record}

    def begin(self, planned: PlannedStep, number: int) -> tuple[str, dict | None]:
        """The step's key, and its entry when it is reused (None: it runs, and is recorded as running)."""
        key = step_key(planned, self.params, self.staging, self.inputs)
        before = self.previous.get(planned.label, {})
        unchanged = before.get("key") == key and planned.executed_copy(self.staging).is_file()
        if unchanged and not (self.force or planned.step.always):
            print(f"[{number}/{len(self.plan)}] {planned.title}: inputs unchanged, reused", flush=True)
            return key, {"key": key, "seconds": before.get("seconds"), "reused": True,
                         "peak_rss_gib": before.get("peak_rss_gib"),
                         "epoch_seconds": planned.epoch_seconds(self.staging)}
        print(f"[{number}/{len(self.plan)}] {planned.title}: {planned.label}{self.watch.time_left(planned)}", flush=True)
        self.running.add(planned.label)
        self.save()
        return key, None

    def finish(self, planned: PlannedStep, entry: dict) -> None:
        self.running.discard(planned.label)
        self.record[planned.label] = entry | {"epoch_seconds": planned.epoch_seconds(self.staging)}
        self.watch.finished(planned, entry)
        self.save()


def study_plan(params, staging: RunPaths, writes_the_run: bool) -> list[PlannedStep]:
    """The steps this process runs: all of them, or (a second process of a run across processes) the audit and
    the model steps, which their training needs; the comparison and the report train nothing."""
    plan = planned_steps(params)
    if not writes_the_run:
        plan = [planned for planned in plan if planned.step is STEPS[0] or planned.step.per_round]
    for name in remove_unplanned_rounds(staging, plan):
        print(f"round {name} is not in this run's evaluation params: its folder is left out", flush=True)
    return plan


def render_report(params, staging: RunPaths, record: dict) -> None:
    print("Rendering the report (HTML + PDF)", flush=True)
    start = time.perf_counter()
    pages = rendering.render(staging.notebooks_dir / STEPS[-1].notebook, staging.report_html, staging.report_pdf,
                             title=f"Product image classification: {params.run_name}")
    record[REPORT_STEP] = {"seconds": round(time.perf_counter() - start, 1), "reused": False}
    store.write_json(staging.steps, record)
    store.write_json(staging.report_info, {"pdf_pages": pages})


def check_where(backend: str, where: Coordinates | None, jobs: int) -> bool:
    """Whether this run spans several processes (checked: JAX, one job at a time)."""
    across = where is not None and where.processes > 1
    if across:
        check_backend(backend, where)
        if jobs != 1:
            raise DistributionError("--jobs runs steps side by side on one machine; a run across processes runs "
                                    "one step at a time, each over every process's devices (leave --jobs at 1)")
        print(f"process {where.index} of {where.processes} (coordinator {where.coordinator})", flush=True)
    return across


def job_request(planned: PlannedStep, key: str, *, params_path: Path, staging: RunPaths, backend: str,
                overrides: dict, where: Coordinates | None, watch: RunProgress) -> dict:
    """What the step's job runs (`lib.pipeline.job`): its kernel tells its progress to ``watch``; in a run across
    processes, a model step's kernel joins the other processes' with the run's coordinates."""
    joins = where is not None and where.processes > 1 and planned.step.per_round
    return step_request(planned, params_path, staging, key, backend, overrides,
                        (where.environment() if joins else {}) | watch.environment(planned))


def run_study(params_file: str | Path, force: bool = False, render: bool = True,
              overrides: dict | list[str] | None = None, jobs: int = 1, where: Coordinates | None = None,
              wait: bool = False, verbose: bool = False, reuse_from: Path | None = None) -> dict[str, dict]:
    """Validate the params (with ``overrides``: `lib.core.config.load_params`), then `run_validated`."""
    return run_validated(load_params(params_file, overrides), params_file, overrides, force, render, jobs, where, wait,
                         verbose, reuse_from)


@tracking.marks_failed_runs
def run_validated(params, params_file: str | Path, overrides: dict | list[str] | None = None, force: bool = False,
                  render: bool = True, jobs: int = 1, where: Coordinates | None = None,
                  wait: bool = False, verbose: bool = False, reuse_from: Path | None = None) -> dict[str, dict]:
    """Holding the run's lock, run (or reuse) every step of ``params`` (loaded from ``params_file`` with
    ``overrides``) in a staging folder, render, publish.

    Returns ``steps.json``'s content: for each step, its wall time, its input key and whether it was reused from
    the previous run. ``jobs``: how many steps may run at once (`lib.pipeline.schedule`). ``wait``: when another
    process is writing this run, wait for it (else `lib.core.store.LockHeld`). ``verbose``: show everything the
    frameworks print (`lib.pipeline.progress`).

    ``where``: this process's place in a run across processes (`lib.core.distribution`; None: one process).
    Every process runs this with the same params; each model step's kernel joins the others' and trains over
    every process's devices, each process feeding its share of every batch. Process 0 writes the run and
    publishes it; another process runs the audit and the model steps (which their training needs) in its own
    folder (`process_run`) and publishes nothing.

    ``reuse_from``: a finished run folder whose steps a run without a folder of its own reuses where their keys
    match (a sweep's earlier run). Process 0 logs the run to MLflow (`lib.pipeline.tracking`).

    While it runs, each step's progress and the run's time left are shown (`lib.pipeline.progress`), without the
    frameworks' start-up chatter unless ``verbose``.
    """
    if not verbose:  # TensorFlow's C++ start-up chatter (CUDA probes, CPU flags) is noise in a progress display.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    overrides = dotted_overrides(overrides)  # as each notebook's parameters cell takes them
    backend = resolve_backend(params.training.backend)  # once: every kernel runs Keras on it
    print(f"Keras backend: {backend} (training.backend: {params.training.backend})", flush=True)
    across = check_where(backend, where, jobs)
    writes_the_run = not across or where.index == 0
    link = (run_paths(params) if writes_the_run else process_run(params, where.index)).root
    link.parent.mkdir(parents=True, exist_ok=True)
    with run_store.run_lock(link, wait, on_wait=lambda message: print(message, flush=True)):
        run_store.recover(link)
        staging, unfinished = run_store.stage(link, reuse_from=reuse_from)
        copied_from = link if link.is_dir() or reuse_from is None else Path(reuse_from)
        previous = store.read_json(RunPaths(copied_from).steps, "delete it: every step of the run is then computed "
                                   "again", default={}) | unfinished
        store.write_json(staging.params_used, params.study_values())
        store.write_json(staging.overrides, override_words(overrides))
        tracker = tracking.begin(params, Path(params_file).resolve(), overrides, backend, staging) \
            if writes_the_run else None
        plan = study_plan(params, staging, writes_the_run)
        watch = RunProgress(plan, params, previous, verbose=verbose, jobs=jobs, shows=writes_the_run)
        inputs = run_inputs(params, backend, where.processes if across else 1)
        book = StepBook(staging, previous, plan, params, inputs, force, watch)
        request = functools.partial(job_request, params_path=Path(params_file).resolve(), staging=staging,
                                    backend=backend, overrides=overrides, where=where, watch=watch)
        with watch:
            run_steps(plan, staging, jobs, book.begin, request, book.finish, watch.watching)
        record = book.in_plan_order()
        store.write_json(staging.steps, record)
        if render and writes_the_run:
            render_report(params, staging, record)
        run_store.publish(staging, link, params.reports_dir if writes_the_run else None)
        if tracker is not None:
            tracker.published(RunPaths(link), inputs.data_listing)
    return record


def parser() -> argparse.ArgumentParser:
    """``./run_all.sh``'s command line."""
    parser = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.splitlines()[0])
    parser.add_argument("params_file", nargs="?", default="params/default.yaml", help="YAML params file")
    parser.add_argument("--force", action="store_true", help="redo every step, even those whose inputs did not change")
    parser.add_argument(
        "--assets",
        metavar="DIR",
        help="a local folder with copies of the downloads (Grocery Store archive, MobileNetV2 weights), "
        "for machines without internet: they are copied into Keras' cache first",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one param by its dotted name, e.g. --set mobilenet_v2.dropout=0.4 (repeatable; the value "
        "is read as YAML: 0.4, true, null, [42, 43]); validated with the params file, recorded in overrides.json",
    )
    parser.add_argument(
        "--sweep",
        dest="sweeps",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="run every combination of the swept values as a run of its own, named from its values, e.g. --sweep "
        "cnn.dropout=0.3,0.5 (repeatable; values read as --set reads them), then compare them "
        "(reports/comparisons/<run_name>-sweep/comparison.html); steps the runs share are computed once",
    )
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run up to N steps whose inputs are ready at once, each on its own GPUs or share of the "
                        "CPU cores (default 1: one after another)")
    parser.add_argument("--wait", action="store_true",
                        help="when another process is writing this run, wait for it to finish (default: stop at once)")
    parser.add_argument("--clean", action="store_true",
                        help="remove every scratch run (reports/.scratch/: what notebooks computed by hand) and exit")
    across = parser.add_argument_group(
        "across processes and hosts (JAX): start the same command on every process; each may instead take its "
        "coordinates from KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID")
    across.add_argument("--coordinator", metavar="HOST:PORT", help="where process 0 serves the run's coordination")
    across.add_argument("--num-processes", type=int, metavar="N", help="how many processes train together")
    across.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 .. N-1 (0 publishes)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show everything the frameworks print (their start-up lines too), not only the progress")
    return parser


def print_summary(record: dict, params, started: float, publishes: bool) -> None:
    """Each step's wall time and peak memory, then where the report is."""
    print("\nWall time and peak memory per step:")
    for step, entry in record.items():
        note = "  (reused: inputs unchanged)" if entry["reused"] else ""
        memory = f"{entry['peak_rss_gib']:6.2f} GiB" if entry.get("peak_rss_gib") is not None else " " * 10
        print(f"  {step:<40} {entry['seconds'] or 0:8.1f} s {memory}{note}")
    print(f"  {'total':<40} {time.perf_counter() - started:8.1f} s")
    if publishes:
        info = store.read_json(run_paths(params).report_info, "the report's page count is unknown", default={})
        pages = info.get("pdf_pages")
        pdf = f"and report.pdf ({pages} pages)" if pages else "(no PDF: WeasyPrint cannot print on this machine)"
        print(f"\nReport: {params.reports_dir / 'report.html'} {pdf}")


UNCHANGED = "The previous report and artefacts are unchanged."


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    try:
        params = load_params(args.params_file, args.overrides)
        if args.clean:
            for line in remove_scratch_runs(params.reports_dir):
                print(line)
            return 0
        where = coordinates(args.coordinator, args.num_processes, args.process_id)
        if args.assets:
            for path in seed_keras_cache(args.assets).values():
                print(f"offline copy in Keras' cache: {path}")
        if args.sweeps:
            return sweep(args, where, started)
        record = run_validated(params, args.params_file, args.overrides, force=args.force, jobs=args.jobs,
                               where=where, wait=args.wait, verbose=args.verbose)
    except (ParamsError, FileNotFoundError, ValueError, DistributionError, store.LockHeld) as error:
        hint = " (or run with --wait to start when it has finished)" if isinstance(error, store.LockHeld) else ""
        print(f"error: {error}{hint}", file=sys.stderr)
        return 2
    except (StepFailed, store.StateFileError) as error:
        print(f"error: {error}\n{UNCHANGED}", file=sys.stderr)
        return 1
    except OSError as error:  # a read-only or full reports folder, a file that vanished: said in one line
        print(f"error: {error.strerror or error} ({error.filename or 'a file of the run'}){hint_for(error)}\n"
              f"{UNCHANGED}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:
        where = f" {interruption}" if str(interruption) else ""
        print(f"\ninterrupted{where}\n{UNCHANGED}", file=sys.stderr)
        return 130
    print_summary(record, params, started, publishes=where is None or where.index == 0)
    return 0


def sweep(args, where: Coordinates | None, started: float) -> int:
    """``--sweep``: every combination as a run of its own (`lib.pipeline.sweep`), then their comparison page."""
    folders, page = run_sweep(run_study, args.params_file, args.overrides, args.sweeps,
                              writes_pages=where is None or where.index == 0, force=args.force, jobs=args.jobs,
                              where=where, wait=args.wait, verbose=args.verbose)
    print(f"\nSweep: {len(folders)} runs in {time.perf_counter() - started:.1f} s: "
          + ", ".join(folder.name for folder in folders) + (f"\nComparison: {page}" if page else ""))
    return 0


def hint_for(error: OSError) -> str:
    """What to do about a filesystem error, where it is clear."""
    return {errno.ENOSPC: ": the disk is full; free some space and run again (finished steps are reused)",
            errno.EACCES: ": this folder cannot be written; make it writable or set reports_dir elsewhere",
            errno.EROFS: ": this filesystem is read-only; set reports_dir to a writable folder",
            errno.EDQUOT: ": the disk quota is used up; free some space and run again"}.get(error.errno, "")


if __name__ == "__main__":
    sys.exit(main())
