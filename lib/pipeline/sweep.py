"""Run a sweep: every combination of the swept values as a run of its own, then their comparison page.

``./run_all.sh params.yaml --sweep cnn.dropout=0.3,0.5 --sweep mobilenet_v2.dense_units=64,128`` runs four
runs, named from their values (`lib.core.sweeps.sweep_run_name`). Every combination is validated, with the
``--set`` overrides, before the first run starts. Each run that has no folder of its own yet starts as a copy of
the finished run nearest to it (the fewest params apart: an earlier run of the sweep, or the params file's own
run), so that the steps they share are reused by key: the audit runs once, a CNN step once per CNN setting.
The comparison page of all the sweep's runs is written last (`lib.report.run_comparison`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lib.core.config import ParamsError, load_params
from lib.core.overrides import changed_fields
from lib.core.paths import run_paths
from lib.core.sweeps import sweep_overrides


def nearest_run(params, finished: list[Path]) -> Path | None:
    """Of the finished run folders, the one whose params differ from ``params`` in the fewest fields."""
    values = params.study_values()

    def distance(folder: Path) -> int:
        used = json.loads((folder / "params.json").read_text())
        return len([name for name in changed_fields(used, values) if name != "run_name"])

    candidates = [f for f in finished if (f / "steps.json").is_file() and (f / "params.json").is_file()]
    return min(candidates, key=distance) if candidates else None


def run_sweep(run_study: Callable, params_file: str | Path, sets: list[str] | None, sweeps: list[str],
              writes_pages: bool = True, **options) -> tuple[list[Path], Path | None]:
    """Run every combination (``run_study``: `lib.run.run_study`, given ``options``); returns the runs' folders
    and the comparison page (None when ``writes_pages`` is false: a process other than 0)."""
    base = load_params(params_file, sets)
    try:
        runs = sweep_overrides(base.run_name, sets, sweeps)
    except ValueError as error:
        raise ParamsError(str(error)) from None
    every = [load_params(params_file, overrides) for overrides in runs]  # all valid before the first starts
    finished = [run_paths(base).root]
    folders = []
    for number, (overrides, params) in enumerate(zip(runs, every), start=1):
        print(f"\n=== sweep run {number}/{len(runs)}: {params.run_name}", flush=True)
        reuse_from = nearest_run(params, finished)
        run_study(params_file, overrides=overrides, reuse_from=reuse_from, **options)
        folders.append(run_paths(params).root)
        finished.append(folders[-1])
    if not writes_pages:
        return folders, None
    # matplotlib, which every run would load otherwise: only when a sweep writes its page
    from lib.report.run_comparison import comparisons_dir, write_comparison_page
    page = write_comparison_page(folders, comparisons_dir(base.reports_dir) / f"{base.run_name}-sweep",
                                 title=f"Sweep of {', '.join(s.partition('=')[0] for s in sweeps)}")
    return folders, page
