"""The study's steps: each notebook, the params it uses, the artefacts it reads and writes; the plan of a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.core.paths import ModelPaths, RunPaths
from lib.core.study import MODELS, StudyModel
from lib.data.rounds import Round, Rounds, evaluation_rounds

REPORT_STEP = "report (HTML + PDF)"

# ``files(run, rounds, round)``: artefact files (or folders) of the run, for one round of a per-round step (None:
# a run-wide step).
Files = Callable[[RunPaths, Rounds, Round | None], list[Path]]


@dataclass(frozen=True)
class Step:
    """One notebook: the params it uses and the run's artefacts it reads, which together with its
    code make its key (`step_key`): a step whose key is unchanged is reused; and the artefacts it writes,
    which the steps after it read (a step waits for the earlier steps that write what it reads:
    `lib.pipeline.schedule.prerequisites`).

    ``uses``: dotted names of the params it reads (``"mobilenet_v2.weights"``: that field only;
    ``"*"``: all). ``reads(run, rounds, round)``, ``writes(run, rounds, round)``: the artefact files (or
    folders) it reads and writes (`lib.core.paths`; the caches under ``interim/`` only save time and are
    neither). ``reads_raw_data``: whether it reads the raw images (the audit: its key includes their listing).
    ``always``: run it every time (the report describes the run itself: its timings, what was reused).
    ``model``: the model (`lib.core.study.MODELS`) a per-round step trains in each round (None: the step is
    run-wide).
    """

    notebook: str
    title: str
    uses: tuple[str, ...]
    reads: Files
    writes: Files
    reads_raw_data: bool = False
    always: bool = False
    model: str | None = None

    @property
    def per_round(self) -> bool:
        return self.model is not None


def _audit_writes(run: RunPaths, rounds: Rounds, round_: None) -> list[Path]:
    """The audit writes the image tables and its summary (``data/``), and every round's split."""
    return [run.data_dir, *[run.round(r.name).split_manifest for r in rounds]]


def _results(paths: ModelPaths, model: StudyModel) -> list[Path]:
    """What later steps read of a model's step in every round: its test metrics, history and predictions, and
    those of the linear probe it trains beside it (`lib.training.probe`), if any."""
    files = [paths.metrics, paths.history, paths.predictions]
    if model.probe is not None:
        files += [paths.probe_metrics, paths.probe_predictions, paths.probe_validation]
    return files


def _model_step_reads(model: StudyModel) -> Files:
    """A model notebook reads its round's split; a later round also reads the method the first round chose."""
    def reads(run: RunPaths, rounds: Rounds, round_: Round) -> list[Path]:
        files = [run.round(round_.name).split_manifest]
        if round_ != rounds.first:
            files.append(run.round(rounds.first.name).model(model.name).methods)
        return files

    return reads


def _model_step_writes(model: StudyModel) -> Files:
    """A model notebook writes its model folder: the kept model and its results, and in the first round the
    minority-class methods it compared."""
    def writes(run: RunPaths, rounds: Rounds, round_: Round) -> list[Path]:
        paths = run.round(round_.name).model(model.name)
        return [paths.model, *_results(paths, model), *([paths.methods] if round_ == rounds.first else [])]

    return writes


def _comparison_reads(run: RunPaths, rounds: Rounds, round_: None) -> list[Path]:
    """The comparison reads every round's test predictions, histories and metrics (and those of the linear
    probe), and in the first round the method tables, the split and the trained models (whose Grad-CAM maps
    it computes)."""
    files = [run.round(rounds.first.name).split_manifest]
    for r in rounds:
        for model in MODELS.values():
            paths = run.round(r.name).model(model.name)
            files += [*_results(paths, model), *([paths.methods, paths.model] if r == rounds.first else [])]
    return files


def _comparison_writes(run: RunPaths, rounds: Rounds, round_: None) -> list[Path]:
    return [run.comparison_dir]


def _report_reads(run: RunPaths, rounds: Rounds, round_: None) -> list[Path]:
    """The report reads the audit's summary, the comparison, the first round's metrics and histories, and the
    step timings (it always runs: it describes the run itself)."""
    first = run.round(rounds.first.name)
    return [run.audit_summary, run.comparison_dir, first.split_manifest,
            *[first.model(m).metrics for m in MODELS], *[first.model(m).history for m in MODELS]]


def _nothing(run: RunPaths, rounds: Rounds, round_: Round | None) -> list[Path]:
    return []


# What a model step's results depend on; training.verbose and training.data_workers do not (any number of worker
# threads serves the same batches), so changing them reuses the trained models.
_MODEL_PARAMS = ("data.image_size", "augmentation", "training.batch_size", "training.backend", "training.deterministic",
                 "training.precision", "minority")


def model_step(model: StudyModel) -> Step:
    """The step of one model of the study: its notebook, run once per round, trains it on the round's split."""
    # a probe's check against the model is read at the comparison's level (`lib.analysis.probe_check`)
    probe = ("evaluation.confidence",) if model.probe is not None else ()
    return Step(model.notebook, model.title, (*_MODEL_PARAMS, model.params_section, *probe), _model_step_reads(model),
                _model_step_writes(model), model=model.name)


STEPS = (
    # the evaluation's rounds (which exist, their seeds) but not its statistics, which only the comparison uses
    Step("01_data_audit.ipynb", "Data audit",
         ("seed", "data", "split", "evaluation.scheme", "evaluation.seeds", "evaluation.folds", "audit",
          "augmentation", "mobilenet_v2.weights"),
         reads=_nothing, writes=_audit_writes, reads_raw_data=True),
    *(model_step(model) for model in MODELS.values()),
    Step("04_comparison.ipynb", "Comparison", ("seed", "evaluation", "data.image_size"), _comparison_reads,
         _comparison_writes),
    # the report notebook writes nothing of the run: the runner renders it to report.html and report.pdf
    Step("05_report.ipynb", "Report", ("*",), _report_reads, _nothing, always=True),
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

    def writes(self, run: RunPaths) -> list[Path]:
        """The run folder's artefacts this execution writes."""
        return self.step.writes(run, self.rounds, self.round)

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
