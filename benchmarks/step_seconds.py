"""Where a finished model step's seconds went: each cell of its executed notebook, and what the model recorded.

    PYTHONPATH=. .venv/bin/python benchmarks/step_seconds.py reports/default/rounds/seed-42 [--model mobilenetv2]

Reads, without running anything, a finished run's round folder: papermill's duration of every cell of
the model's executed notebook (``notebooks/02_cnn.ipynb`` or ``03_mobilenetv2.ipynb``), largest first,
with the cell's first line; then what the model's ``metrics.json`` says of the biggest cells: the kept
training's seconds (``training_seconds``; in the first round the other methods' trainings are the rest
of the training cell), the activation cache's (``caching_seconds``) and the linear probe's (its features
and its fit, ``probe_metrics.json``). Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lib.core.paths import ModelPaths, RoundPaths
from lib.core.study import DEFAULT_MODEL, MODELS


def cell_seconds(executed_notebook: Path) -> list[tuple[float, str]]:
    """(seconds, first line) of every code cell papermill timed, largest first."""
    cells = json.loads(executed_notebook.read_text())["cells"]
    timed = []
    for cell in cells:
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell["cell_type"] == "code" and duration is not None:
            lines = "".join(cell["source"]).strip().splitlines()
            timed.append((float(duration), lines[0] if lines else ""))
    return sorted(timed, reverse=True)


def recorded_seconds(model: ModelPaths) -> dict[str, float]:
    """The seconds the model's own artefacts record: its kept training, the activation cache, the probe."""
    metrics = json.loads(model.metrics.read_text())
    recorded = {"training of the kept method (metrics.json training_seconds)": metrics["training_seconds"]}
    caching = metrics.get("training_inputs", {}).get("caching_seconds")
    if caching is not None:
        recorded["activation cache (training_inputs.caching_seconds)"] = caching
    if model.probe_metrics.is_file():
        probe = json.loads(model.probe_metrics.read_text())
        for name in ("feature_seconds", "fit_seconds"):
            recorded[f"linear probe: {name} (probe_metrics.json)"] = probe[name]
    return recorded


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("round_folder", type=Path, help="a finished run's rounds/<round> folder")
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    round_paths = RoundPaths(args.round_folder)
    notebook = round_paths.notebooks_dir / MODELS[args.model].notebook
    if not notebook.is_file():
        parser.error(f"{notebook} does not exist: give a finished run's round folder (reports/<run>/rounds/<round>)")
    cells = cell_seconds(notebook)
    print(f"{notebook}: {sum(s for s, _ in cells):.1f} s in {len(cells)} timed cells\n")
    print("| seconds | cell (first line) |\n|---:|---|")
    for seconds, line in cells:
        if seconds >= 0.1:
            print(f"| {seconds:.1f} | `{line[:80]}` |")
    print("\n| recorded by the model | seconds |\n|---|---:|")
    for name, seconds in recorded_seconds(round_paths.model(args.model)).items():
        print(f"| {name} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
