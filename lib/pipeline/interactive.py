"""A notebook opened by hand: which run it reads, whether it shows that run's results or computes, where it writes.

``./run_all.sh`` gives each notebook its staging folder (``run_dir``): the notebook computes there, as it
always has. Run by hand (``run_dir`` None), a notebook never writes into the published run
``reports/<run_name>/``. It works out this step's key exactly as the runner does (`lib.pipeline.keys.step_key`:
the params with the notebook's ``overrides``, the lib code, packages, backend, data and the artefacts the
step reads), and then:

- **reuses**: the key equals the one the run recorded for this step, so the notebook shows that run's results
  (models, histories, predictions, tables) and trains nothing;
- **computes**: something differs, so the notebook computes into a scratch run,
  ``reports/.scratch/<run_name>-<params fingerprint>/``, which starts as a copy of the published run: the
  steps whose keys still match there (the audit and the split, when only a model parameter changed) are
  reused from it, and what a notebook computes by hand stays there for the notebooks after it.

The scratch run of the same params, once it exists, is where every later notebook of those params reads.
The runner never reads it, and nothing in it is published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lib.core.backends import resolve_backend
from lib.core.config import Params, load_params
from lib.core.overrides import changed_fields
from lib.core.paths import RunPaths, copy_run, run_paths
from lib.pipeline import keys, tracking
from lib.pipeline.steps import PlannedStep, planned_steps

SCRATCH_DIR = ".scratch"  # under reports_dir; a run name cannot start with a dot, so no run is called this


@dataclass(frozen=True)
class NotebookRun:
    """Where one notebook execution reads and writes. ``reuses``: it shows ``folder``'s results and writes
    nothing; otherwise it computes into ``folder`` (the runner's staging folder, or the scratch run)."""

    params: Params
    planned: PlannedStep
    folder: RunPaths
    published: RunPaths
    reuses: bool
    by_hand: bool
    key: str | None
    reason: str

    @property
    def run_dir(self) -> str:
        """The run folder the notebook's lib calls take (`lib.core.paths.run_paths`)."""
        return str(self.folder.root)

    @property
    def round_name(self) -> str | None:
        return self.planned.round_name

    def describe(self) -> str:
        """What a person at the notebook needs first: the run it reads, reuse or compute and why, where it writes."""
        if not self.by_hand:
            return f"run by ./run_all.sh: computing into {self.folder.root}"
        step = self.planned.title
        if self.reuses:
            return (f"{step}: showing the results of {self.folder.root}\n"
                    f"reused, nothing is trained or written: {self.reason}")
        return (f"{step}: computing, because {self.reason}\n"
                f"writing into the scratch run {self.folder.root} (the published run {self.published.root} "
                "is never written by a notebook run by hand)")

    def finished(self) -> None:
        """Record a step computed by hand in its scratch run, so that the notebooks after it (and this one,
        run again with the same inputs) reuse it, and log it to MLflow (`lib.pipeline.tracking`). Called by each
        notebook's last cell; nothing to do otherwise."""
        if self.by_hand and not self.reuses:
            record = _steps(self.folder)
            record[self.planned.label] = {"key": self.key, "seconds": None, "reused": False, "by_hand": True}
            self.folder.steps.write_text(json.dumps(record, indent=2) + "\n")
            tracking.log_step_by_hand(self.params, self.folder, self.planned.label, self.key,
                                      resolve_backend(self.params.training.backend))


def scratch_paths(params: Params) -> RunPaths:
    """The scratch run of these params: ``reports/.scratch/<run_name>-<fingerprint>``."""
    return run_paths(params, params.reports_dir / SCRATCH_DIR / f"{params.run_name}-{params.fingerprint()}")


def _steps(run: RunPaths) -> dict:
    return json.loads(run.steps.read_text()) if run.steps.is_file() else {}


def _planned(params: Params, notebook: str, round_name: str | None) -> PlannedStep:
    """The execution of ``notebook`` (for ``round_name``; None: the first round) in the plan of ``params``."""
    plan = [p for p in planned_steps(params) if p.step.notebook == notebook]
    if not plan:
        raise ValueError(f"{notebook} is not a step of the study: {[p.step.notebook for p in planned_steps(params)]}")
    if plan[0].round is None:
        return plan[0]
    names = [p.round_name for p in plan]
    if round_name is not None and round_name not in names:
        raise ValueError(f"round_name {round_name!r} is not a round of this run: {names}")
    return plan[names.index(round_name) if round_name is not None else 0]


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
    return "the params are the published run's, but its lib code, packages, data or the artefacts it reads differ"


def open_notebook(notebook: str, params_file: str | Path, run_dir: str | Path | None = None,
                  round_name: str | None = None, step_key: str | None = None,
                  overrides: dict | None = None) -> NotebookRun:
    """Where the notebook ``notebook`` (e.g. "02_cnn.ipynb") reads and writes, from its parameters cell.

    ``run_dir`` set (the runner): compute there under the runner's key ``step_key``. ``run_dir`` None (by hand):
    reuse the published run's results, or its scratch run's, when this step's key matches; else compute into
    the scratch run (created as a copy of the published run). ``overrides``: dotted params names and values,
    validated with the params file (`lib.core.config.load_params`).
    """
    params = load_params(params_file, overrides)
    planned = _planned(params, notebook, round_name)
    published = run_paths(params)
    if run_dir is not None:
        return NotebookRun(params, planned, run_paths(params, run_dir), published, reuses=False, by_hand=False,
                           key=step_key, reason="run by ./run_all.sh")
    scratch = scratch_paths(params)
    backend, listing = resolve_backend(params.training.backend), keys.data_source_listing(params)
    reading = scratch if scratch.root.is_dir() else published
    key = keys.step_key(planned, params, reading, listing, backend)
    if _recorded(reading, planned, key):
        which = "the scratch run" if reading is scratch else "the published run"
        return NotebookRun(params, planned, reading, published, reuses=True, by_hand=True, key=key,
                           reason=f"this step's inputs are those {which} recorded for it")
    reason = _why_computed(params, published, planned)
    if not scratch.root.is_dir():
        if published.root.is_dir():
            copy_run(published.root, scratch.root)
        scratch.root.mkdir(parents=True, exist_ok=True)
    return NotebookRun(params, planned, scratch, published, reuses=False, by_hand=True,
                       key=keys.step_key(planned, params, scratch, listing, backend), reason=reason)
