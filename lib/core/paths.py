"""Where every artefact of a run lives, computed in one place and never typed twice.

    reports/<run_name>/
        data/images.csv         every file the audit looked at: checks, hashes, near-duplicate group
        data/excluded.csv       files left out, each with the reason
        data/audit.json         the audit's summary numbers
        data/duplicate_pairs.csv  every duplicate pair the audit found (exact, pHash, features)
        params.json             the run's parameters
        comparison/             every table and test result of the comparison (04), which the report (05) reads
        interim/                caches that only save time (decoded pixels); safe to delete
        notebooks/*.ipynb       executed copies of the run-wide notebooks (audit, comparison, report)
        rounds/<round>/         one evaluation round (`RoundPaths`, see `lib.data.rounds`):
            split.csv           its split, which every later step of the round reads
            notebooks/*.ipynb   executed copies of the model notebooks
            <model>/            one folder per model of `lib.core.study.MODELS` (`ModelPaths`), written by its notebook
                methods/<method>/   a finished training of one minority-class method (`TrainingPaths`), kept
                                    until the step completes, for an interrupted run to resume from
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from lib.core.store import link_or_copy

PROJECT_ROOT = Path(__file__).resolve().parents[2]

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
# What the study writes at the top of reports_dir besides the runs (`lib.pipeline.store`): no run may take their names.
RESERVED_RUN_NAMES = frozenset({"report.html", "report.pdf", "README.md", "mlruns.db", "mlartifacts", "comparisons"})


@dataclass(frozen=True)
class RunPaths:
    """The artefact layout of one run, rooted at ``reports/<run_name>``."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def image_table(self) -> Path:
        return self.data_dir / "images.csv"

    @property
    def excluded(self) -> Path:
        return self.data_dir / "excluded.csv"

    @property
    def warnings(self) -> Path:  # label conflicts and extreme images, kept or left out
        return self.data_dir / "warnings.csv"

    @property
    def cross_class_pairs(self) -> Path:  # near-duplicates under different labels, for review
        return self.data_dir / "cross_class_pairs.csv"

    @property
    def audit_summary(self) -> Path:
        return self.data_dir / "audit.json"

    @property
    def duplicate_pairs(self) -> Path:  # every duplicate pair: row numbers of the image table, distance, kind
        return self.data_dir / "duplicate_pairs.csv"

    @property
    def interim_dir(self) -> Path:
        return self.root / "interim"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def params_used(self) -> Path:  # the run's parameters (run-wide: no step's input; for the benchmark)
        return self.root / "params.json"

    @property
    def overrides(self) -> Path:  # the params changed by dotted name for this run (`./run_all.sh --set`), as NAME=VALUE lines
        return self.root / "overrides.json"

    @property
    def steps(self) -> Path:  # per step: wall time, input key, reused or not
        return self.root / "steps.json"

    @property
    def comparison_dir(self) -> Path:  # every table and test result of the comparison, which the report reads
        return self.root / "comparison"

    def comparison_table(self, name: str) -> Path:
        return self.comparison_dir / f"{name}.csv"

    @property
    def comparison_verdict(self) -> Path:  # the significance rule applied (JSON)
        return self.comparison_dir / "verdict.json"

    @property
    def grad_cam_maps(self) -> Path:  # both models' Grad-CAM maps of the images the report explains
        return self.comparison_dir / "grad_cam.npz"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_pdf(self) -> Path:
        return self.root / "report.pdf"

    @property
    def report_info(self) -> Path:  # page count and sizes of the rendered report
        return self.root / "report.json"

    @property
    def rounds_dir(self) -> Path:
        return self.root / "rounds"

    def round(self, name: str) -> RoundPaths:
        return RoundPaths(self.rounds_dir / name)


@dataclass(frozen=True)
class RoundPaths:
    """One evaluation round's split and the models trained on it."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def split_manifest(self) -> Path:
        return self.root / "split.csv"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    def model(self, model_name: str) -> ModelPaths:
        return ModelPaths(self.root / model_name)


@dataclass(frozen=True)
class ModelPaths:
    """What a model notebook writes; later steps read only these files."""

    root: Path

    @property
    def model(self) -> Path:  # the trained model (best epoch), Keras format
        return self.root / "model.keras"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def methods(self) -> Path:  # the minority-class methods compared on validation (first round)
        return self.root / "methods.csv"

    @property
    def probe_predictions(self) -> Path:  # the linear probe's test predictions (`lib.training.probe`), as predictions.csv
        return self.root / "probe_predictions.csv"

    @property
    def probe_metrics(self) -> Path:  # its test metrics, and the fine-tuned model against it on validation
        return self.root / "probe_metrics.json"

    @property
    def probe_validation(self) -> Path:  # the fine-tuned model's and the probe's predicted class of each validation image
        return self.root / "probe_validation.csv"

    @property
    def trainings_dir(self) -> Path:  # the finished trainings of an unfinished step
        return self.root / "methods"

    def training(self, method: str) -> TrainingPaths:  # a finished training of one minority-class method
        return TrainingPaths(self.trainings_dir / method)


@dataclass(frozen=True)
class TrainingPaths:
    """One finished training of a minority-class method, kept under the step's key until the step completes,
    so that an interrupted run reuses it (`lib.training.experiment.save_training`)."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model.keras"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def parameters(self) -> Path:  # the model's parameter counts
        return self.root / "parameters.json"

    @property
    def inputs(self) -> Path:  # what the training read (MobileNetV2's activation cache summary)
        return self.root / "inputs.json"

    @property
    def key(self) -> Path:  # written last: its presence, holding the step's key, means the rest is complete
        return self.root / "key"


def run_paths(params, run_dir: str | Path | None = None) -> RunPaths:
    """The layout for a validated `lib.core.config.Params`: in ``run_dir`` when given, else ``reports/<run_name>``.

    ``./run_all.sh`` passes a staging folder as ``run_dir`` and moves it into place only
    when every step has succeeded; a notebook opened in Jupyter leaves it None.
    """
    return RunPaths(Path(run_dir) if run_dir else params.reports_dir / params.run_name)


def copy_run(source: Path, target: Path) -> None:
    """Copy a run folder (to stage a new run, or to start a scratch run). Every file is copied, so that
    writing the copy never changes the source, except the interim caches, which are written once, replaced
    whole and never edited: those are hard-linked (copied where the filesystem has no hard links). Exported
    models (``export/``) belong to the models they were exported from, and are left out."""
    def copy(source_file: str, target_file: str) -> None:
        if Path(source_file).parent.name == "interim":
            link_or_copy(source_file, target_file)
        else:
            shutil.copy2(source_file, target_file)

    shutil.copytree(source, target, copy_function=copy, ignore=_left_out_of_copies(Path(source)))


def _left_out_of_copies(root: Path):
    def ignore(folder: str, names: list[str]) -> list[str]:
        locks = [name for name in names if name.endswith(".lock")]  # a lock is its own folder's
        return locks + (["export"] if Path(folder) == root and "export" in names else [])

    return ignore
