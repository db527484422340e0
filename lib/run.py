"""Run the whole study: ``python -m lib.run [PARAMS_FILE]`` (what ``./run_all.sh`` calls).

1. The params file is validated before anything runs.
2. The notebooks run in order with papermill (the model notebooks once per evaluation
   round), each with the params file and a staging folder (``reports/.staging-<run_name>``,
   a copy of the previous run) as parameters;
   their executed copies and artefacts go there. A step whose inputs (its notebook, the
   ``lib`` modules it imports, package versions, the params it uses, the raw data's listing and the
   artefacts it reads) are unchanged since the previous run is reused instead
   (``--force`` redoes everything); ``steps.json`` records which.
3. The executed report notebook is rendered to HTML and PDF.
4. Only then is the staging folder moved into place as ``reports/<run_name>``, and its
   report copied to ``reports/report.html`` and ``reports/report.pdf``.

A failure or an interruption at any step leaves the previous report and artefacts as they
were, exits non-zero, and names the notebook and the cell that failed. The next run resumes:
the steps the unfinished run completed (kept in its staging folder) are reused when their
inputs are unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from lib.core.backends import resolve_backend
from lib.core.config import ParamsError, load_params
from lib.core.distribution import Coordinates, DistributionError, check_backend, coordinates
from lib.core.overrides import dotted_overrides, override_words
from lib.core.paths import RunPaths, copy_run, run_paths
from lib.data.assets import seed_keras_cache
from lib.pipeline.execute import StepFailed, execute_step
from lib.pipeline.keys import data_source_listing, step_key
from lib.pipeline import tracking
from lib.pipeline.schedule import run_steps
from lib.pipeline.sweep import run_sweep
from lib.pipeline.steps import REPORT_STEP, STEPS, PlannedStep, planned_steps
from lib.report import render as rendering


def publish(staging: RunPaths, final: RunPaths, reports_dir: Path | None) -> None:
    """Swap the finished staging folder in for the previous run, then publish its report (``reports_dir`` None:
    a run folder that is not published, as a second process's)."""
    previous = final.root.with_name(f".previous-{final.root.name}")
    shutil.rmtree(previous, ignore_errors=True)
    if final.root.exists():
        final.root.rename(previous)
    staging.root.rename(final.root)
    shutil.rmtree(previous, ignore_errors=True)
    if reports_dir is None:
        return
    for source, name in ((final.report_html, "report.html"), (final.report_pdf, "report.pdf")):
        if not source.is_file():  # no PDF where WeasyPrint cannot print (`lib.report.sections.render`): none of another run
            (reports_dir / name).unlink(missing_ok=True)
            continue
        partial = reports_dir / f".{name}.partial"
        shutil.copyfile(source, partial)
        os.replace(partial, reports_dir / name)  # atomic: a reader never sees half a report


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


@tracking.marks_failed_runs
def run_study(params_file: str | Path, force: bool = False, render: bool = True,
              overrides: dict | list[str] | None = None, jobs: int = 1,
              where: Coordinates | None = None, reuse_from: Path | None = None) -> dict[str, dict]:
    """Validate the params (with ``overrides``: `lib.core.config.load_params`), run (or reuse) every step in a
    staging folder, render, publish.

    Returns ``steps.json``'s content: for each step, its wall time, its input key and
    whether it was reused from the previous run. ``jobs``: how many steps may run at once
    (`lib.pipeline.schedule`).

    ``where``: this process's place in a run across processes (`lib.core.distribution`; None: one process).
    Every process runs this with the same params; each model step's kernel joins the others' and trains over
    every process's devices, each process feeding its share of every batch. Process 0 writes the run and
    publishes it; another process runs the audit and the model steps (which their training needs) in its own
    folder (`process_run`) and publishes nothing.

    ``reuse_from``: a finished run folder whose steps a run without a folder of its own reuses where their keys
    match (a sweep's earlier run). Process 0 logs the run to MLflow (`lib.pipeline.tracking`).
    """
    # TensorFlow's C++ start-up chatter (CUDA probes, CPU flags) is noise in a progress display.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    params = load_params(params_file, overrides)
    overrides = dotted_overrides(overrides)  # as each notebook's parameters cell takes them
    backend = resolve_backend(params.training.backend)  # once: every kernel runs Keras on it
    print(f"Keras backend: {backend} (training.backend: {params.training.backend})", flush=True)
    across = where is not None and where.processes > 1
    if across:
        check_backend(backend, where)
        if jobs != 1:
            raise DistributionError("--jobs runs steps side by side on one machine; a run across processes runs "
                                    "one step at a time, each over every process's devices (leave --jobs at 1)")
        print(f"process {where.index} of {where.processes} (coordinator {where.coordinator})", flush=True)
    writes_the_run = not across or where.index == 0
    params_path = Path(params_file).resolve()
    final = run_paths(params) if writes_the_run else process_run(params, where.index)
    staging = run_paths(params, final.root.with_name(f".staging-{final.root.name}"))
    previous = json.loads(final.steps.read_text()) if final.steps.is_file() else {}
    progress = staging.root / "progress.json"  # what an unfinished run had done; removed on success
    if progress.is_file():
        # An earlier run stopped part-way: the steps it finished are in staging, valid for
        # their recorded keys; the one it was running is recorded with no key, so it reruns.
        print(f"resuming the unfinished run in {staging.root}", flush=True)
        previous |= json.loads(progress.read_text())
    else:
        shutil.rmtree(staging.root, ignore_errors=True)
        source = final.root if final.root.is_dir() or reuse_from is None else Path(reuse_from)
        if source.is_dir():
            copy_run(source, staging.root)  # what unchanged steps reuse
            if not previous and RunPaths(source).steps.is_file():  # a sweep's earlier run: its keys
                previous = json.loads(RunPaths(source).steps.read_text())
    staging.root.mkdir(parents=True, exist_ok=True)
    staging.params_used.write_text(json.dumps(params.study_values(), indent=2) + "\n")
    staging.overrides.write_text(json.dumps(override_words(overrides), indent=2) + "\n")
    tracker = tracking.begin(params, params_path, overrides, backend, staging) if writes_the_run else None
    data_listing = data_source_listing(params)

    plan = planned_steps(params)
    if not writes_the_run:  # the comparison and the report train nothing: process 0 alone runs them
        plan = [planned for planned in plan if planned.step is STEPS[0] or planned.step.per_round]
    for name in remove_unplanned_rounds(staging, plan):
        print(f"round {name} is not in this run's evaluation params: its folder is left out", flush=True)

    record: dict[str, dict] = {}
    running: set[str] = set()  # recorded with no key in the progress file, so that a resumed run reruns them

    def save_progress() -> None:
        progress.write_text(json.dumps(previous | record | {label: {"key": None} for label in running}, indent=2) + "\n")

    def begin(planned: PlannedStep, number: int) -> tuple[str, dict | None]:
        key = step_key(planned, params, staging, data_listing, backend, where.processes if across else 1)
        before = previous.get(planned.label, {})
        unchanged = before.get("key") == key and planned.executed_copy(staging).is_file()
        if unchanged and not (force or planned.step.always):
            print(f"[{number}/{len(plan)}] {planned.title}: inputs unchanged, reused", flush=True)
            return key, {"key": key, "seconds": before.get("seconds"), "reused": True,
                         "peak_rss_gib": before.get("peak_rss_gib"), "epoch_seconds": planned.epoch_seconds(staging)}
        print(f"[{number}/{len(plan)}] {planned.title}: {planned.label}", flush=True)
        running.add(planned.label)
        save_progress()
        return key, None

    def finish(planned: PlannedStep, entry: dict) -> None:
        running.discard(planned.label)
        record[planned.label] = entry | {"epoch_seconds": planned.epoch_seconds(staging)}
        save_progress()
        staging.steps.write_text(json.dumps(record, indent=2) + "\n")  # the report quotes these

    def execute(planned: PlannedStep, key: str) -> None:
        # a model step's kernel joins the other processes' with the run's coordinates
        joins = across and planned.step.per_round
        execute_step(planned, params_path, staging, key, backend, overrides, where.environment() if joins else None)

    run_steps(plan, staging, jobs, begin, execute, finish)
    record = {planned.label: record[planned.label] for planned in plan}  # in the plan's order, however they ran
    staging.steps.write_text(json.dumps(record, indent=2) + "\n")

    if render and writes_the_run:
        print("Rendering the report (HTML + PDF)", flush=True)
        start = time.perf_counter()
        pages = rendering.render(staging.notebooks_dir / STEPS[-1].notebook, staging.report_html, staging.report_pdf,
                              title=f"Product image classification: {params.run_name}")
        record[REPORT_STEP] = {"seconds": round(time.perf_counter() - start, 1), "reused": False}
        staging.steps.write_text(json.dumps(record, indent=2) + "\n")
        staging.report_info.write_text(json.dumps({"pdf_pages": pages}) + "\n")
    progress.unlink()
    publish(staging, final, params.reports_dir if writes_the_run else None)
    if tracker is not None:
        tracker.published(final, data_listing)
    return record


def main(argv: list[str] | None = None) -> int:
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
    across = parser.add_argument_group(
        "across processes and hosts (JAX): start the same command on every process; each may instead take its "
        "coordinates from KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID")
    across.add_argument("--coordinator", metavar="HOST:PORT", help="where process 0 serves the run's coordination")
    across.add_argument("--num-processes", type=int, metavar="N", help="how many processes train together")
    across.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 .. N-1 (0 publishes)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        where = coordinates(args.coordinator, args.num_processes, args.process_id)
        if args.assets:
            for path in seed_keras_cache(args.assets).values():
                print(f"offline copy in Keras' cache: {path}")
        if args.sweeps:
            folders, page = run_sweep(run_study, args.params_file, args.overrides, args.sweeps,
                                      writes_pages=where is None or where.index == 0, force=args.force, jobs=args.jobs,
                                      where=where)
            print(f"\nSweep: {len(folders)} runs in {time.perf_counter() - started:.1f} s: "
                  + ", ".join(folder.name for folder in folders) + (f"\nComparison: {page}" if page else ""))
            return 0
        record = run_study(args.params_file, force=args.force, overrides=args.overrides, jobs=args.jobs, where=where)
    except (ParamsError, FileNotFoundError, ValueError, DistributionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StepFailed as error:
        print(f"error: {error}\nThe previous report and artefacts are unchanged.", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:
        where = f" {interruption}" if str(interruption) else ""
        print(f"\ninterrupted{where}\nThe previous report and artefacts are unchanged.", file=sys.stderr)
        return 130
    print("\nWall time and peak memory per step:")
    for step, entry in record.items():
        note = "  (reused: inputs unchanged)" if entry["reused"] else ""
        memory = f"{entry['peak_rss_gib']:6.2f} GiB" if entry.get("peak_rss_gib") is not None else " " * 10
        print(f"  {step:<40} {entry['seconds'] or 0:8.1f} s {memory}{note}")
    print(f"  {'total':<40} {time.perf_counter() - started:8.1f} s")
    if where is not None and where.index > 0:
        return 0  # process 0 publishes the report
    params = load_params(args.params_file, args.overrides)
    pages = json.loads(run_paths(params).report_info.read_text())["pdf_pages"]
    pdf = f"and report.pdf ({pages} pages)" if pages else "(no PDF: WeasyPrint cannot print on this machine)"
    print(f"\nReport: {params.reports_dir / 'report.html'} {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
