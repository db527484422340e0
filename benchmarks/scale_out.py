"""Wall time of one study run with ``--jobs 1`` and ``--jobs 2``, and in one process and across two.

    .venv/bin/python benchmarks/scale_out.py [--params PARAMS] [--only TEXT ...]

Without ``--params``: the tiny study the tests run (30 generated images in 3 classes at 32 px, two rounds), written
under a temporary folder. Each setting runs ``python -m lib.run`` on a fresh reports folder (nothing reused),
one setting after another; two processes are two ``lib.run`` on this machine, coordinated on localhost (JAX,
gloo collectives). Prints one row per setting: the wall time of the whole command (of the slower process), the
sum of the steps' own seconds (``steps.json``), and whether steps overlapped. The figures go to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "tests"))

# setting: (training.backend, --jobs, processes)
SETTINGS = {
    "TensorFlow, --jobs 1": ("tensorflow", 1, 1),
    "TensorFlow, --jobs 2": ("tensorflow", 2, 1),
    "JAX, one process": ("jax", 1, 1),
    "JAX, two processes on this machine": ("jax", 1, 2),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def tiny_study(root: Path) -> dict:
    """The tests' tiny study params (`tests/helpers.write_tiny_study_params`), its images generated under ``root``."""
    from helpers import TINY_CLASSES, make_class_folders, write_tiny_study_params

    folder = make_class_folders(root / "images", TINY_CLASSES)
    return yaml.safe_load(write_tiny_study_params(root, folder, "tiny", evaluation={"seeds": [1, 2]}).read_text())


def run_setting(values: dict, backend: str, jobs: int, processes: int, root: Path) -> dict:
    """One run on a fresh reports folder; its wall time and what its steps.json says."""
    values = values | {"reports_dir": str(root / "reports"),
                       "training": values.get("training", {}) | {"backend": backend}}
    root.mkdir(parents=True)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(values))
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("XLA_", "KERAS_"))}
    environment |= {"PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "lib.run", str(params_file), "--jobs", str(jobs)]
    if processes > 1:
        command += ["--coordinator", f"localhost:{free_port()}", "--num-processes", str(processes)]
    start = time.perf_counter()
    running = [subprocess.Popen(command + (["--process-id", str(index)] if processes > 1 else []), cwd=PROJECT_ROOT,
                                env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for index in range(processes)]
    outputs = [process.communicate()[0] for process in running]
    wall = time.perf_counter() - start
    for index, (process, output) in enumerate(zip(running, outputs)):
        if process.returncode:
            raise SystemExit(f"process {index} failed:\n{output[-3000:]}")
    steps = json.loads((root / "reports" / values["run_name"] / "steps.json").read_text())
    timed = [entry for entry in steps.values() if entry.get("started_s") is not None]
    overlapped = any(a["started_s"] < b["finished_s"] and b["started_s"] < a["finished_s"]
                     for i, a in enumerate(timed) for b in timed[i + 1:])
    return {"wall": wall, "steps": sum(entry["seconds"] or 0 for entry in steps.values()), "overlapped": overlapped}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, help="a params file (default: the tests' tiny study)")
    parser.add_argument("--only", action="append", help="the settings whose name contains this text (repeatable)")
    args = parser.parse_args(argv)
    chosen = [name for name in SETTINGS if args.only is None or any(text in name for text in args.only)]
    with tempfile.TemporaryDirectory(prefix="scale-out-") as scratch:
        scratch = Path(scratch)
        values = yaml.safe_load(args.params.read_text()) if args.params else tiny_study(scratch)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start; "
              f"params: {args.params or 'the tiny study'}\n")
        print("| setting | wall time (s) | sum of the steps' seconds | steps overlapped |\n|---|---:|---:|---|")
        for name in chosen:
            backend, jobs, processes = SETTINGS[name]
            seen = run_setting(values, backend, jobs, processes, scratch / name.replace(" ", "_").replace(",", ""))
            print(f"| {name} | {seen['wall']:.1f} | {seen['steps']:.1f} | {'yes' if seen['overlapped'] else 'no'} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
