"""What logging a run to MLflow costs the tiny study: the wait for the logging, and wall time with and without.

    .venv/bin/python benchmarks/tracking_cost.py [--pairs 2]

The tests' tiny study (30 generated images in 3 classes at 32 px, two rounds), run in this process
(`lib.run.run_study`) on a fresh reports folder (nothing reused, a new SQLite store) with ``tracking.enabled``
false and true, alternately, ``--pairs`` times each. For the runs that log, it also times what the run waits for:
starting the tracking worker (`lib.pipeline.tracking.begin`) and, after publishing, the logging itself
(`Tracker.published`); the worker imports MLflow and opens the store while the steps run. Prints one row per run
and the medians; the target is at most 2 % of the tiny study's wall time. The figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "tests"))


def timed(owner, name: str, spent: list[float]) -> None:
    """Wrap ``owner.name`` so that each call adds its seconds to ``spent``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="runs with and without tracking (default 2 each)")
    args = parser.parse_args(argv)
    from helpers import TINY_CLASSES, make_class_folders, write_tiny_study_params

    from lib import run
    from lib.pipeline import tracking

    waited: list[float] = []
    timed(tracking, "begin", waited)
    timed(tracking.Tracker, "published", waited)
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        folder = make_class_folders(root / "images", TINY_CLASSES)
        for number in range(args.pairs):
            for enabled in (False, True):
                where = root / f"run-{number}-{'on' if enabled else 'off'}"
                where.mkdir()
                params = write_tiny_study_params(where, folder, "tiny", evaluation={"seeds": [1, 2]},
                                                 tracking={"enabled": enabled})
                waited.clear()
                start = time.perf_counter()
                run.run_study(params)
                wall = time.perf_counter() - start
                rows.append({"tracking": enabled, "wall": wall, "waited": sum(waited)})
                print(f"tracking {'on ' if enabled else 'off'}: wall {wall:7.1f} s, waited for the logging "
                      f"{sum(waited):5.2f} s ({100 * sum(waited) / wall:.2f} %)", flush=True)
                assert yaml.safe_load(params.read_text())["tracking"]["enabled"] is enabled
    on = [r for r in rows if r["tracking"]]
    off = [r for r in rows if not r["tracking"]]
    wall_on, wall_off = statistics.median(r["wall"] for r in on), statistics.median(r["wall"] for r in off)
    wait = statistics.median(r["waited"] for r in on)
    print(f"\nmedian wall: {wall_off:.1f} s without tracking, {wall_on:.1f} s with "
          f"({100 * (wall_on - wall_off) / wall_off:+.1f} %); median wait for the logging {wait:.2f} s "
          f"({100 * wait / wall_on:.2f} % of the run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
