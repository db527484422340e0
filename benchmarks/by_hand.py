"""How long a notebook takes when a person opens it on a finished run and runs every cell.

    .venv/bin/python benchmarks/by_hand.py [--params params/default.yaml] [--notebooks 02_cnn.ipynb 03_mobilenetv2.ipynb]

Each notebook runs top to bottom with papermill in the project's Python, with only the parameters a person
sets (the params file), as `lib.pipeline.interactive` serves it: the published run's results when the step's
inputs are unchanged. Prints each notebook's wall time (kernel start included), whether it reused or computed,
and whether the published run's files are byte-identical afterwards. Run it after ./run_all.sh of the same
params; the figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lib.core.config import load_params  # noqa: E402
from lib.core.paths import NOTEBOOKS_DIR, run_paths  # noqa: E402


def folder_digest(folder: Path) -> str:
    """sha256 over every file's name and bytes under ``folder``."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def run_by_hand(notebook: str, params_file: Path, out: Path, **parameters) -> tuple[float, str]:
    """Execute a source notebook as a person would (the params file and only the ``parameters`` a person sets),
    in the project's own Python; returns (wall seconds, everything it printed)."""
    import papermill

    executed = out / f"by-hand-{len(list(out.glob('by-hand-*')))}-{notebook}"
    start = time.perf_counter()
    papermill.execute_notebook(NOTEBOOKS_DIR / notebook, executed, kernel_name="python3", cwd=str(NOTEBOOKS_DIR),
                               parameters={"params_file": str(params_file), **parameters}, progress_bar=False)
    seconds = time.perf_counter() - start
    cells = json.loads(executed.read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"])
    return seconds, printed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/default.yaml", type=Path)
    parser.add_argument("--notebooks", nargs="+", default=["02_cnn.ipynb", "03_mobilenetv2.ipynb"])
    args = parser.parse_args()
    params_file = args.params if args.params.is_absolute() else PROJECT_ROOT / args.params
    published = run_paths(load_params(params_file)).root
    if not published.is_dir():
        sys.exit(f"no published run at {published}: run ./run_all.sh {args.params} first")
    before = folder_digest(published)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"published run {published}")
    print(f"| notebook | wall time (s) | reused | published run unchanged |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for notebook in args.notebooks:
            seconds, printed = run_by_hand(notebook, params_file, Path(out))
            reused = "showing the results of" in printed
            print(f"| {notebook} | {seconds:.1f} | {'yes' if reused else 'no: ' + printed.splitlines()[0]} "
                  f"| {'yes' if folder_digest(published) == before else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
