"""The study's steps: each notebook, the params it uses and the artefacts it reads; the plan of a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.core.paths import MODELS, PROBE_MODEL, RunPaths
from lib.data.rounds import Round, Rounds, evaluation_rounds

REPORT_STEP = "report (HTML + PDF)"


def _model_step_reads(model: str):
    """A model notebook reads its round's split; a later round also reads the method the first round chose."""
    def reads(run: RunPaths, rounds: Rounds, round_: Round) -> list[Path]:
        files = [run.round(round_.name).split_manifest]
        if round_ != rounds.first:
            files.append(run.round(rounds.first.name).model(model).methods)
        return files

    return reads


def _comparison_reads(run: RunPaths, rounds: Rounds, round_: None) -> list[Path]:
    """The comparison reads every round's test predictions, histories and metrics (and those of the linear
    probe), and in the first round the method tables, the split and the trained models (whose Grad-CAM maps
    it computes)."""
    files = [run.round(rounds.first.name).split_manifest]
    for r in rounds:
        for model in MODELS:
            paths = run.round(r.name).model(model)
            files += [paths.metrics, paths.history, paths.predictions]
            if model == PROBE_MODEL:  # the linear probe the MobileNetV2 step trains beside it (`lib.training.probe`)
                files += [paths.probe_metrics, paths.probe_predictions, paths.probe_validation]
            if r == rounds.first:
                files += [paths.methods, paths.model]
    return files


def _report_reads(run: RunPaths, rounds: Rounds, round_: None) -> list[Path]:
    """The report reads the audit's summary, the comparison, the first round's metrics and histories, and the
    step timings (it always runs: it describes the run itself)."""
    first = run.round(rounds.first.name)
    return [run.audit_summary, run.comparison_dir, run.round(rounds.first.name).split_manifest,
            *[first.model(m).metrics for m in MODELS], *[first.model(m).history for m in MODELS]]


@dataclass(frozen=True)
class Step:
    """One notebook: the params it uses and the run's artefacts it reads, which together with its
    code make its key (`step_key`): a step whose key is unchanged is reused.

    ``uses``: dotted names of the params it reads (``"mobilenet_v2.weights"``: that field only;
    ``"*"``: all). ``reads(run, rounds, round)``: the artefact files it reads (`lib.core.paths`).
    ``reads_raw_data``: whether it reads the raw images (the audit: its key includes their listing).
    ``always``: run it every time (the report describes the run itself: its timings, what was reused).
    ``model``: the artefact folder a per-round step writes in each round (None: the step is run-wide).
    """

    notebook: str
    title: str
    uses: tuple[str, ...]
    reads: Callable[[RunPaths, Rounds, Round | None], list[Path]]
    reads_raw_data: bool = False
    always: bool = False
    model: str | None = None

    @property
    def per_round(self) -> bool:
        return self.model is not None


# What a model step's results depend on; training.verbose and training.data_workers do not (any number of worker
# threads serves the same batches), so changing them reuses the trained models.
_MODEL_PARAMS = ("data.image_size", "augmentation", "training.batch_size", "training.backend", "training.deterministic",
                 "training.precision", "minority")
STEPS = (
    # reads the raw images; writes data/ and rounds/<round>/split.csv
    Step("01_data_audit.ipynb", "Data audit",
         ("seed", "data", "split", "evaluation", "audit", "augmentation", "mobilenet_v2.weights"),
         reads=lambda run, rounds, round_: [], reads_raw_data=True),
    # writes rounds/<round>/cnn/
    Step("02_cnn.ipynb", "Custom CNN", (*_MODEL_PARAMS, "cnn"), _model_step_reads("cnn"), model="cnn"),
    # writes rounds/<round>/mobilenetv2/
    Step("03_mobilenetv2.ipynb", "MobileNetV2 transfer learning", (*_MODEL_PARAMS, "mobilenet_v2"),
         _model_step_reads("mobilenetv2"), model="mobilenetv2"),
    # writes comparison/
    Step("04_comparison.ipynb", "Comparison", ("seed", "evaluation", "data.image_size"), _comparison_reads),
    # the report notebook, rendered to report.html and report.pdf
    Step("05_report.ipynb", "Report", ("*",), _report_reads, always=True),
)


@dataclass(frozen=True)
class PlannedStep:
    """One execution of a step: the notebook, the run's rounds, and the round it runs for (None: run-wide)."""

    step: Step
    rounds: Rounds
    round: Round | None = None

    @property
    def round_name(self) -> str | None:
        return None if self.round is None else self.round.name

    @property
    def label(self) -> str:  # its key in steps.json
        return self.step.notebook if self.round is None else f"rounds/{self.round.name}/{self.step.notebook}"

    @property
    def title(self) -> str:
        return self.step.title if self.round is None else f"{self.step.title}, round {self.round.name}"

    def reads(self, run: RunPaths) -> list[Path]:
        """The run folder's artefacts this execution depends on."""
        return self.step.reads(run, self.rounds, self.round)

    def executed_copy(self, run: RunPaths) -> Path:
        folder = run.notebooks_dir if self.round is None else run.round(self.round.name).notebooks_dir
        return folder / self.step.notebook

    def epoch_seconds(self, run: RunPaths) -> dict[str, dict] | None:
        """A model step's epochs, per phase of the kept training: how many, their median and slowest seconds
        (the first epoch includes tracing the model); None for other steps or before the model is saved.
        A machine that trains slowly, or unevenly, shows up in ``steps.json`` and the report's step table."""
        if self.step.model is None:
            return None
        history = run.round(self.round.name).model(self.step.model).history
        if not history.is_file():
            return None
        seconds = pd.read_csv(history, usecols=["phase", "seconds"]).groupby("phase", sort=False)["seconds"]
        return {str(phase): {"epochs": int(times.size), "median": round(float(times.median()), 1),
                             "slowest": round(float(times.max()), 1)} for phase, times in seconds}


def planned_steps(params) -> list[PlannedStep]:
    """Every step in order, the per-round ones once per round (all of a round's models before the next round)."""
    rounds = evaluation_rounds(params.evaluation)
    plan = [PlannedStep(STEPS[0], rounds)]
    plan += [PlannedStep(step, rounds, round_) for round_ in rounds for step in STEPS if step.per_round]
    plan += [PlannedStep(step, rounds) for step in STEPS[1:] if not step.per_round]
    return plan


def find_planned(params, notebook: str, round_name: str | None) -> PlannedStep:
    """The execution of ``notebook`` (for ``round_name``; None: the first round) in the plan of ``params``."""
    plan = [p for p in planned_steps(params) if p.step.notebook == notebook]
    if not plan:
        raise ValueError(f"{notebook} is not a step of the study: {[s.notebook for s in STEPS]}")
    if plan[0].round is None:
        return plan[0]
    names = [p.round_name for p in plan]
    if round_name is not None and round_name not in names:
        raise ValueError(f"round_name {round_name!r} is not a round of this run: {names}")
    return plan[names.index(round_name) if round_name is not None else 0]
