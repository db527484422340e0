"""What `predict` costs on this CPU, and whether it agrees with the run: images per second per model and runtime.

    .venv/bin/python benchmarks/predict_throughput.py --run reports/default [--images 256] \
        [--write benchmarks/RESULTS.md]

On the first round's test images (``predictions.csv``), for each model and each runtime (Keras, the
model in the precision it was trained in; the float32 ONNX export in onnxruntime, when `lib.deploy.export`
has written it): the wall time of
`lib.deploy.predict.classify_files` (reading and resizing every file included, model loading excluded,
after one warm-up batch) as images per second; how many of its labels agree with the run's
``predicted_label``; and the exported files' sizes. Prints a Markdown section; ``--write`` appends it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

from lib.core.study import MODELS
from lib.deploy.finished_run import RunModel
from lib.deploy.predict import classify_files, load_classifier

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def measure(run: Path, model_name: str, runtime: str, limit: int, batch_size: int = 32) -> dict:
    """Images/s of `classify_files` on up to ``limit`` test images, and agreement with ``predictions.csv``."""
    run_model = RunModel.open(run, model_name)
    classifier = load_classifier(run_model, runtime)
    table = pd.read_csv(run_model.paths.predictions).head(limit)
    files = [Path(path) for path in table["path"]]
    classify_files(files[:batch_size], run_model, classifier, 1, batch_size)  # warm-up: graph tracing, caches
    start = time.perf_counter()
    predictions = classify_files(files, run_model, classifier, 1, batch_size)
    seconds = time.perf_counter() - start
    labels = [p.top[0][0] if p.top else "" for p in predictions]
    return {"model": model_name, "runtime": runtime, "images": len(files), "seconds": seconds,
            "images_per_second": len(files) / seconds,
            "agree": int((pd.Series(labels) == table["predicted_label"].reset_index(drop=True)).sum())}


def export_sizes(run: Path) -> dict:
    """{model: {format: bytes}} from each export's model.json (empty where the run was not exported)."""
    sizes = {}
    for name in MODELS:
        described = run / "export" / name / "model.json"
        if described.is_file():
            files = json.loads(described.read_text())["files"]
            sizes[name] = {kind: entry["bytes"] for kind, entry in files.items()}
            sizes[name]["max_abs_difference"] = json.loads(described.read_text())["check"]["max_abs_difference"]
    return sizes


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").is_file() else "?"
    from lib.training.models import cpu_has_native_bfloat16

    arithmetic = "bfloat16 arithmetic" if cpu_has_native_bfloat16() else "no bfloat16 arithmetic"
    return (f"{cpu}, {os.cpu_count()} cores, {arithmetic}, Python {platform.python_version()}, "
            f"load average {load} at the start")


def markdown(run: Path, rows: list[dict], sizes: dict) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    lines = [f"## {date.today().isoformat()}: `predict_throughput.py --run {run}` ({machine()}), commit {commit}", "",
             "| model | runtime | images | images/s (reading included) | labels agreeing with predictions.csv |",
             "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['runtime']} | {r['images']} | {r['images_per_second']:.1f} | "
              f"{r['agree']} / {r['images']} |" for r in rows]
    if sizes:
        lines += ["", "| model | model.keras | model.onnx | max abs difference ONNX vs Keras (float32) |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {name} | {s['keras'] / 1e6:.1f} MB | {s['onnx'] / 1e6:.1f} MB | {s['max_abs_difference']:.1e} |"
                  for name, s in sizes.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=PROJECT_ROOT / "reports" / "default")
    parser.add_argument("--images", type=int, default=256, help="test images per measurement (default: %(default)s)")
    parser.add_argument("--write", type=Path, help="also append the Markdown section to this file")
    args = parser.parse_args(argv)
    runtimes = ["keras"] + (["onnx"] if (args.run / "export").is_dir() else [])
    rows = []
    for name in MODELS:
        for runtime in runtimes:
            rows.append(measure(args.run, name, runtime, args.images))
            print(json.dumps(rows[-1]), flush=True)
    text = markdown(args.run, rows, export_sizes(args.run))
    print(text)
    if args.write:
        with open(args.write, "a") as handle:
            handle.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
