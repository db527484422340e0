"""A notebook opened by hand: which run it reads, whether it shows that run's results or computes, where it writes.

``./run_all.sh`` gives each notebook its staging folder (``run_dir``): the notebook computes there, as it
always has. Run by hand (``run_dir`` None), a notebook never writes into the published run
``reports/<run_name>/``. It works out this step's key exactly as the runner does (`lib.pipeline.keys.step_key`:
the params with the notebook's ``overrides``, the code, packages, backend, hardware, data and the artefacts the
step reads), and then:

- **reuses**: the key equals the one the run recorded for this step, so the notebook shows that run's results
  (models, histories, predictions, tables) and trains nothing;
- **computes**: something differs, so the notebook computes into a scratch run,
  ``reports/.scratch/<run_name>-<params fingerprint>/``, which starts as a copy of the published run: the
  steps whose keys still match there (the audit and the split, when only a model parameter changed) are
  reused from it, and what a notebook computes by hand stays there for the notebooks after it.

Nothing is shown or computed on stale inputs: every step this one reads from (its prerequisites) is re-keyed
each time the notebook opens, and when one of them does not match (an override of the split, say), the notebook
stops, naming the notebook to run first with the same overrides. A scratch run made from an older published run
is made again from the current one. While a notebook computes into a scratch run it holds that run's lock (one
writer); its last cell (`NotebookRun.finished`) checks the key again before recording the step, so that a ``lib``
edit made while it ran is said, not recorded. ``reports/.scratch`` keeps the ``scratch_runs_kept`` most recently
used scratch runs; ``./run_all.sh --clean`` removes them all. The runner never reads a scratch run, and nothing in
it is published.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lib.core import store
from lib.core.backends import resolve_backend
from lib.core.config import Params, load_params
from lib.core.overrides import changed_fields
from lib.core.paths import RunPaths, copy_run, run_paths
from lib.core.step import StepRun
from lib.pipeline import keys, tracking
from lib.pipeline import store as run_store
from lib.pipeline.execute import RUNNER_PID_VARIABLE
from lib.pipeline.schedule import prerequisites
from lib.pipeline.steps import PlannedStep, find_planned, planned_steps

SCRATCH_DIR = ".scratch"  # under reports_dir; a run name cannot start with a dot, so no run is called this
SCRATCH_RECORD = "scratch.json"  # in a scratch run: the published version it was copied from


class EarlierStepNeeded(RuntimeError):
    """This step reads results that neither the published run nor the scratch run holds for these params."""


@dataclass(kw_only=True)
class NotebookRun(StepRun):
    """One notebook execution: the `lib.core.step.StepRun` its cells take (``reuses``: it shows ``paths``'
    results and writes nothing; otherwise it computes into ``paths``, the runner's staging folder or the
    scratch run), the step it runs, the published run, and why it reuses or computes."""

    planned: PlannedStep
    published: RunPaths
    by_hand: bool
    reason: str
    lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def describe(self) -> str:
        """What a person at the notebook needs first: the run it reads, reuse or compute and why, where it writes."""
        if not self.by_hand:
            return f"run by ./run_all.sh: computing into {self.paths.root}"
        step = self.planned.title
        if self.reuses:
            shown = self.paths.root
            if shown == self.published.root:  # the published version, by the name a person knows it
                shown = f"{run_paths(self.params).root} (version {shown.name})"
            return (f"{step}: showing the results of {shown}\n"
                    f"reused, nothing is trained or written: {self.reason}")
        return (f"{step}: computing, because {self.reason}\n"
                f"writing into the scratch run {self.paths.root} (the published run {self.published.root} "
                "is never written by a notebook run by hand)")

    def finished(self) -> None:
        """The notebook's last cell, run by hand: check the key again (code edited while the notebook ran changes
        it), then record a step computed by hand in its scratch run, so that the notebooks after it (and this one,
        run again with the same inputs) reuse it, and log it to MLflow (`lib.pipeline.tracking`); release the scratch
        run. Says what it did."""
        if not self.by_hand:
            return
        try:
            if keys.step_key(self.planned, self.params, self.paths, _inputs(self.params)) != self.key:
                shown = "what it shows is from before the change; " if self.reuses else ""
                print(f"not recorded: this step's inputs changed since the notebook opened (lib code, packages, data "
                      f"or params); {shown}run the notebook again from the top")
            elif not self.reuses:
                record = _steps(self.paths)
                record[self.planned.label] = {"key": self.key, "seconds": None, "reused": False, "by_hand": True}
                store.write_json(self.paths.steps, record)
                tracking.log_step_by_hand(self.params, self.paths, self.planned.label, self.key,
                                          resolve_backend(self.params.training.backend))
                print(f"recorded in the scratch run {self.paths.root}")
        finally:
            self.lock.close()


def scratch_paths(params: Params) -> RunPaths:
    """The scratch run of these params: ``reports/.scratch/<run_name>-<fingerprint>``."""
    return run_paths(params, params.reports_dir / SCRATCH_DIR / f"{params.run_name}-{params.fingerprint()}")


def _steps(run: RunPaths) -> dict:
    return store.read_json(run.steps, "delete the run folder that holds it, or run ./run_all.sh again", default={})


def _inputs(params: Params) -> keys.RunInputs:
    return keys.run_inputs(params, resolve_backend(params.training.backend))


def _recorded(run: RunPaths, planned: PlannedStep, key: str) -> bool:
    """Whether ``run`` holds this step's results for exactly this key (finished by the runner or by hand)."""
    entry = _steps(run).get(planned.label, {})
    return entry.get("key") == key and (entry.get("by_hand") or planned.executed_copy(run).is_file())


def _why_computed(params: Params, published: RunPaths, planned: PlannedStep) -> str:
    if not published.steps.is_file():
        return f"there is no published run at {published.root} yet"
    if planned.label not in _steps(published):
        return f"the published run has no {planned.label}"
    if published.params_used.is_file():
        changed = changed_fields(json.loads(published.params_used.read_text()), params.study_values())
        if changed:
            return f"these params differ from the published run's: {', '.join(changed)}"
    return "the params are the published run's, but its code, packages, hardware, data or the artefacts it reads differ"


def earlier_steps(params: Params, planned: PlannedStep) -> list[PlannedStep]:
    """The steps whose results ``planned`` reads, directly or through others, in the plan's order."""
    plan = planned_steps(params)
    by_label = {p.label: p for p in plan}
    waits = prerequisites(plan, RunPaths(Path(".")))
    needed, pending = set(), [planned.label]
    while pending:
        for label in waits[pending.pop()]:
            if label not in needed:
                needed.add(label)
                pending.append(label)
    return [by_label[p.label] for p in plan if p.label in needed]


def missing_earlier_step(params: Params, planned: PlannedStep, run: RunPaths, inputs: keys.RunInputs) -> str | None:
    """The first earlier step whose recorded results in ``run`` are not those of these params (re-keyed now), in
    words; None when every one matches."""
    for earlier in earlier_steps(params, planned):
        if earlier.step.always:
            continue
        if not _recorded(run, earlier, keys.step_key(earlier, params, run, inputs)):
            where = "" if earlier.round is None else f" with round_name = {earlier.round_name!r}"
            return f"{earlier.step.notebook}{where}"
    return None


def _published_version(published: RunPaths) -> str | None:
    return str(published.root) if published.root.is_dir() else None


def _copy_published(published: RunPaths, scratch: RunPaths) -> None:
    """Make the scratch run a fresh copy of the published one (or an empty run), in one step: copied beside it,
    then renamed into place, so that a copy cut short is never read."""
    partial = scratch.root.with_name(f".{scratch.root.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    if published.root.is_dir():
        copy_run(published.root, partial)
    partial.mkdir(parents=True, exist_ok=True)
    store.write_json(partial / SCRATCH_RECORD, {"copied_from": _published_version(published)})
    shutil.rmtree(scratch.root, ignore_errors=True)
    partial.rename(scratch.root)


def _scratch_is_current(published: RunPaths, scratch: RunPaths) -> bool:
    """Whether the scratch run was copied from the run published now."""
    record = store.read_json(scratch.root / SCRATCH_RECORD, "delete that scratch run", default={})
    return scratch.root.is_dir() and record.get("copied_from") == _published_version(published)


def _scratch_lock(scratch: RunPaths):
    return run_store.run_lock(scratch.root)


def prune_scratch_runs(reports_dir: Path, keep: int, spare: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` most recently used scratch runs (never ``spare``, nor one a notebook is
    computing into); return those deleted."""
    folder = Path(reports_dir) / SCRATCH_DIR
    if not folder.is_dir():
        return []
    runs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for run in runs[keep:]:
        if run == spare or store.is_locked(run_store.lock_file(run)):
            continue
        shutil.rmtree(run, ignore_errors=True)
        removed.append(run)
    return removed


def remove_scratch_runs(reports_dir: Path) -> list[str]:
    """``./run_all.sh --clean``: delete every scratch run but those a notebook is computing into; what was done,
    a line each."""
    folder = Path(reports_dir) / SCRATCH_DIR
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []
    lines = []
    for run in runs:
        try:
            with _scratch_lock(RunPaths(run)):
                shutil.rmtree(run)
            lines.append(f"removed the scratch run {run}")
        except store.LockHeld as held:
            lines.append(f"kept {run}: {held}")
    return lines or [f"no scratch runs in {folder}"]


def _open_by_hand(params: Params, planned: PlannedStep) -> NotebookRun:
    """`open_notebook` without ``run_dir``: show, or compute into the scratch run, or stop (`EarlierStepNeeded`)."""
    published = RunPaths(run_paths(params).root.resolve())  # one version of the run, whatever is published meanwhile
    scratch, inputs = scratch_paths(params), _inputs(params)
    reading = scratch if _scratch_is_current(published, scratch) else published
    needed = missing_earlier_step(params, planned, reading, inputs)  # before all: what this step reads
    if needed is not None:
        raise EarlierStepNeeded(
            f"{planned.step.notebook} reads results that {reading.root} does not hold for these params and code: "
            f"run {needed} by hand first, with the same params_file and overrides")
    key = keys.step_key(planned, params, reading, inputs)
    if _recorded(reading, planned, key):
        which = "the scratch run" if reading is scratch else "the published run"
        return NotebookRun(params, reading, planned.round_name, key, reuses=True, planned=planned,
                           published=published, by_hand=True,
                           reason=f"this step's inputs are those {which} recorded for it")
    notebook = NotebookRun(params, scratch, planned.round_name, planned=planned, published=published, by_hand=True,
                           reason=_why_computed(params, published, planned))
    notebook.lock.enter_context(_scratch_lock(scratch))
    if not _scratch_is_current(published, scratch):
        _copy_published(published, scratch)
    record = _steps(scratch)
    record.pop(planned.label, None)  # computed anew: until it is finished, nothing reuses this step
    store.write_json(scratch.steps, record)
    os.utime(scratch.root)  # the most recently used scratch run is the last pruned
    prune_scratch_runs(params.reports_dir, params.scratch_runs_kept, spare=scratch.root)
    notebook.key = keys.step_key(planned, params, scratch, inputs)
    return notebook


def open_notebook(notebook: str, params_file: str | Path, run_dir: str | Path | None = None,
                  round_name: str | None = None, step_key: str | None = None,
                  overrides: dict | None = None) -> NotebookRun:
    """Where the notebook ``notebook`` (e.g. "02_cnn.ipynb") reads and writes, from its parameters cell: the
    `NotebookRun` its cells pass to the step's functions (the params are loaded here, once per step), whose
    `lib.core.step.StepRun.result` computes each result or reads it back.

    ``run_dir`` set (the runner): compute there under the runner's key ``step_key``; the kernel ends with the
    runner. ``run_dir`` None (by hand): reuse the published run's results, or its scratch run's, when this step's
    key matches; else compute into the scratch run (created as a copy of the published run), or stop when an
    earlier step's results for these params are missing. ``overrides``: dotted params names and values,
    validated with the params file (`lib.core.config.load_params`).
    """
    params = load_params(params_file, overrides)
    planned = find_planned(params, notebook, round_name)
    if run_dir is None:
        return _open_by_hand(params, planned)
    if RUNNER_PID_VARIABLE in os.environ:  # a killed runner leaves no kernel writing into its staging folder
        store.die_with_parent(int(os.environ[RUNNER_PID_VARIABLE]))
    return NotebookRun(params, run_paths(params, run_dir), planned.round_name, step_key, planned=planned,
                       published=run_paths(params), by_hand=False, reason="run by ./run_all.sh")
