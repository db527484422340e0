"""Run the whole study: ``python -m lib.run [PARAMS_FILE]`` (what ``./run_all.sh`` calls).

1. The params file is validated before anything runs.
2. The notebooks run in order with papermill, each with the params file and a staging
   folder (``reports/.staging-<run_name>``) as parameters; their executed copies and
   artefacts go there.
3. The executed report notebook is rendered to HTML and PDF.
4. Only then is the staging folder moved into place as ``reports/<run_name>``, and its
   report copied to ``reports/report.html`` and ``reports/report.pdf``.

A failure or an interruption at any step leaves the previous report and artefacts as they
were, exits non-zero, and names the notebook and the cell that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lib.assets import seed_keras_cache
from lib.config import ParamsError, load_params
from lib.paths import NOTEBOOKS_DIR, RunPaths, run_paths

REPORT_STEP = "report (HTML + PDF)"


@dataclass(frozen=True)
class Step:
    notebook: str
    title: str


STEPS = (
    Step("01_data_audit.ipynb", "Data audit"),
    Step("02_cnn.ipynb", "Custom CNN"),
    Step("03_mobilenetv2.ipynb", "MobileNetV2 transfer learning"),
    Step("04_comparison.ipynb", "Comparison"),
    Step("05_report.ipynb", "Report"),
)


class StepFailed(RuntimeError):
    """A notebook failed; the message names it and its failing cell."""


def execute_step(step: Step, params_file: Path, run_dir: Path) -> Path:
    """Execute one notebook with papermill into ``run_dir/notebooks``; return the executed copy."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed = run_dir / "notebooks" / step.notebook
    executed.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            NOTEBOOKS_DIR / step.notebook,
            executed,
            parameters={"params_file": str(params_file), "run_dir": str(run_dir)},
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


def publish(staging: RunPaths, final: RunPaths, reports_dir: Path) -> None:
    """Swap the finished staging folder in for the previous run, then publish its report."""
    previous = final.root.with_name(f".previous-{final.root.name}")
    shutil.rmtree(previous, ignore_errors=True)
    if final.root.exists():
        final.root.rename(previous)
    staging.root.rename(final.root)
    shutil.rmtree(previous, ignore_errors=True)
    for source, name in ((final.report_html, "report.html"), (final.report_pdf, "report.pdf")):
        partial = reports_dir / f".{name}.partial"
        shutil.copyfile(source, partial)
        os.replace(partial, reports_dir / name)  # atomic: a reader never sees half a report


def run_study(params_file: str | Path, steps=STEPS, render: bool = True) -> dict[str, float]:
    """Validate the params, run every step into a staging folder, publish; return each step's wall time (s)."""
    # TensorFlow's C++ start-up chatter (CUDA probes, CPU flags) is noise in a progress display.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    params = load_params(params_file)
    params_path = Path(params_file).resolve()
    final = run_paths(params)
    staging = run_paths(params, final.root.with_name(f".staging-{params.run_name}"))
    shutil.rmtree(staging.root, ignore_errors=True)  # leftovers of an earlier failed run
    staging.root.mkdir(parents=True)
    if len(steps) < len(STEPS) and final.root.exists():
        # A partial run (tests, re-running the models) starts from the previous run's artefacts.
        shutil.copytree(final.root, staging.root, dirs_exist_ok=True)

    timings: dict[str, float] = {}
    for number, step in enumerate(steps, start=1):
        print(f"[{number}/{len(steps)}] {step.title}: {step.notebook}", flush=True)
        start = time.perf_counter()
        execute_step(step, params_path, staging.root)
        timings[step.notebook] = round(time.perf_counter() - start, 1)
        staging.timings.write_text(json.dumps(timings, indent=2) + "\n")  # the report quotes these

    if render and steps[-1] == STEPS[-1]:
        from lib.report import render as render_report

        print(f"[{len(steps)}/{len(steps)}] rendering the report", flush=True)
        start = time.perf_counter()
        pages = render_report(staging.notebooks_dir / STEPS[-1].notebook, staging.report_html, staging.report_pdf,
                              title=f"Product image classification: {params.run_name}")
        timings[REPORT_STEP] = round(time.perf_counter() - start, 1)
        staging.report_info.write_text(json.dumps({"pdf_pages": pages}) + "\n")
        staging.timings.write_text(json.dumps(timings, indent=2) + "\n")
        publish(staging, final, params.reports_dir)
    else:
        shutil.rmtree(final.root, ignore_errors=True)
        staging.root.rename(final.root)
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
            for path in seed_keras_cache(args.assets).values():
                print(f"offline copy in Keras' cache: {path}")
        timings = run_study(args.params_file)
    except (ParamsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StepFailed as error:
        print(f"error: {error}\nThe previous report and artefacts are unchanged.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the previous report and artefacts are unchanged.", file=sys.stderr)
        return 130
    print("\nWall time per step:")
    for step, seconds in timings.items():
        print(f"  {step:<28} {seconds:8.1f} s")
    print(f"  {'total':<28} {time.perf_counter() - started:8.1f} s")
    params = load_params(args.params_file)
    pages = json.loads(run_paths(params).report_info.read_text())["pdf_pages"]
    print(f"\nReport: {params.reports_dir / 'report.html'} and report.pdf ({pages} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
