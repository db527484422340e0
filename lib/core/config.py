"""The study's parameters: one schema, read from YAML and validated before any work starts.

Every number the study uses lives here with its default, its type and its allowed range.
A params file only needs the fields it changes; anything it gets wrong (an unknown key, a
wrong type, a value out of range, a path that does not exist) is reported in one
`ParamsError` that lists every bad field and what it expects.

Relative paths in a params file are relative to the project root, so the same file works
from `./run_all.sh` and from a notebook opened in Jupyter.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from lib.core.backends import BACKENDS
from lib.core.minority import METHODS, SELECTION_METRICS
from lib.core.overrides import laid_over, nested_overrides, override_words
from lib.core.paths import PROJECT_ROOT, RESERVED_RUN_NAMES

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
UnitInterval = Annotated[float, Field(ge=0.0, lt=1.0)]
MAX_GROUP_SIZE = 50  # see SplitParams.max_group_size and README's calibration note
MAX_GROUP_SHARE = 0.1  # below the test share (0.15), so that every class has groups for each fold
RunName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
TrackingURI = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:")]


class ParamsError(ValueError):
    """A params file that cannot be used; the message lists every problem found."""


def distinct(values: list, name: str) -> list:
    """A list validator: ``values`` unchanged when no value repeats, else a ValueError naming the field."""
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must be distinct")
    return values


class _Section(BaseModel):
    # Unknown keys are errors, not silently ignored: a typo must never fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class GroceryStoreParams(_Section):
    """Which part of the Grocery Store dataset (Klasson et al., 2019) to study."""

    label_level: Literal["coarse", "fine"] = "coarse"
    classes: list[str] | None = Field(default=None, description="Class names to keep; null keeps every class.")
    max_per_class: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="Sample these classes down to at most this many images (seeded).")

    @model_validator(mode="after")
    def _capped_classes_are_kept(self) -> GroceryStoreParams:
        if self.classes is not None:
            unknown = sorted(set(self.max_per_class) - set(self.classes))
            if unknown:
                raise ValueError(f"max_per_class names classes not in 'classes': {unknown}")
        return self


class DataParams(_Section):
    """Where the images come from.

    - ``grocery_store``: the Grocery Store dataset, downloaded or found offline.
    - ``folder``: any directory with one sub-folder per class.
    - ``manifest``: a CSV with ``path, label, split`` columns, used as-is (no re-split).
    """

    source: Literal["grocery_store", "folder", "manifest"] = "grocery_store"
    directory: Path | None = None
    manifest: Path | None = None
    grocery_store: GroceryStoreParams = GroceryStoreParams()
    sample_seed: int = Field(default=42, description="Seed of the class sub-sampling.")
    exclude_classes: list[str] = Field(
        default_factory=list,
        description="Classes to leave out (listed in the audit with that reason); a name that is no class is an error.",
    )
    min_images_per_class: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        default=None,
        description="Leave out classes with fewer usable images than this (listed in the audit); null: "
        "a class too small to split stops the run with a message instead.",
    )
    image_size: tuple[Annotated[int, Field(ge=8, le=1024)], Annotated[int, Field(ge=8, le=1024)]] = (224, 224)

    @field_validator("directory", "manifest")
    @classmethod
    def _resolve(cls, value: Path | None) -> Path | None:
        return None if value is None else (PROJECT_ROOT / value).resolve()

    @model_validator(mode="after")
    def _source_has_its_path(self) -> DataParams:
        if self.source == "folder":
            if self.directory is None:
                raise ValueError("source 'folder' needs 'directory': the folder of class sub-folders")
            if not self.directory.is_dir():
                raise ValueError(f"directory {self.directory} does not exist or is not a folder")
        if self.source == "manifest":
            if self.manifest is None:
                raise ValueError("source 'manifest' needs 'manifest': a CSV with path, label, split")
            if not self.manifest.is_file():
                raise ValueError(f"manifest {self.manifest} does not exist")
        return self


class SplitParams(_Section):
    """The stratified train/validation/test fractions of each evaluation round's split."""

    train: Fraction = 0.70
    val: Fraction = 0.15
    test: Fraction = 0.15
    group_near_duplicates: bool = Field(
        default=True,
        description="Keep near-duplicate groups (see 'audit') whole: no group spans two splits.",
    )
    max_group_size: Annotated[int, Field(ge=2, le=100_000)] | None = Field(
        default=MAX_GROUP_SIZE,
        description="A chain of near-duplicate pairs within a class is one group up to this many images; a "
        "longer chain is cut by complete linkage into groups of images that are all alike, of at most this "
        "size; null: no cap.",
    )
    max_group_share: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        default=MAX_GROUP_SHARE,
        description="The same cap as a share of the group's class (at least one image), so that a class of "
        "look-alikes still splits into enough groups for the folds; null: no such cap.",
    )

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class AugmentationParams(_Section):
    """The study's training-time augmentation, in Keras' ``ImageDataGenerator`` terms."""

    rotation_degrees: Annotated[float, Field(ge=0.0, le=180.0)] = 20.0
    width_shift: UnitInterval = 0.1
    height_shift: UnitInterval = 0.1
    shear: UnitInterval = Field(default=0.1, description="Shear intensity (fraction).")
    zoom: UnitInterval = 0.1
    horizontal_flip: bool = True


class AuditParams(_Section):
    """Thresholds of the data audit."""

    phash_max_distance: Annotated[int, Field(ge=0, le=64)] = Field(
        default=8, description="Hamming distance at or below which two 64-bit pHashes are near-duplicates."
    )
    max_image_pixels: Annotated[int, Field(ge=1)] = Field(
        default=89_478_485,
        description="Images declaring more pixels than this are refused (decompression bombs).",
    )
    feature_min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = Field(
        default=0.9,
        description="Cosine similarity of ImageNet MobileNetV2 pooled features at or above which two "
        "images are near-duplicates (photos of one product in one session).",
    )
    samples_per_class: Annotated[int, Field(ge=1, le=20)] = 6
    keep_label_conflicts: bool = Field(
        default=False,
        description="Keep files whose identical bytes lie under two or more classes (listed as label "
        "conflicts either way); false leaves every copy out.",
    )
    min_image_side: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=32, description="Images with a side shorter than this many pixels are listed as warnings."
    )
    max_aspect_ratio: Annotated[float, Field(ge=1.0, le=1000.0)] = Field(
        default=10.0,
        description="Images whose long side exceeds this many times the short side are listed as warnings.",
    )
    exclude_extreme_images: bool = Field(
        default=False,
        description="Leave out the images min_image_side or max_aspect_ratio warn about (kept by default).",
    )


class EvaluationParams(_Section):
    """How often the study is repeated, on which splits, and the levels its statistics are read at.

    - ``holdout``: one round per seed; each seed draws its own split and its own
      initialisation (repeated stratified hold-out).
    - ``kfold``: for each seed, ``folds`` rounds; every image is tested exactly once per
      seed, validation is drawn from the other folds.

    ``confidence`` and ``alpha`` are used by the comparison (`lib.analysis.compare`: every bootstrap
    interval, McNemar's test and the significance rule), the linear probe's check and the report's words.
    """

    scheme: Literal["holdout", "kfold"] = "holdout"
    seeds: list[int] = Field(default=[42, 43, 44], min_length=1, description="One round (holdout) or one k-fold per seed.")
    folds: Annotated[int, Field(ge=2, le=20)] = 5
    confidence: Annotated[float, Field(ge=0.5, lt=1.0)] = Field(
        default=0.95, description="Level of every bootstrap interval (percentile bootstrap of the round-averaged metric).",
    )
    alpha: Annotated[float, Field(gt=0.0, le=0.5)] = Field(
        default=0.05, description="Significance level of McNemar's test: the models differ only where p <= alpha in "
        "every round (and their intervals do not overlap).",
    )

    _distinct_seeds = field_validator("seeds")(lambda value: distinct(value, "seeds"))


class MinorityParams(_Section):
    """Methods against class imbalance, compared on the validation split of the first round.

    - ``class_weight``: scikit-learn's 'balanced' loss weights (the original study's choice);
    - ``oversample``: the training stream draws every class equally often (augmented, so that
      repeats of a rare image differ), no loss weights;
    - ``logit_adjustment``: no weights while training, then every class's log-probability is
      shifted by ``-tau * log(prior)`` (Menon et al., 2021), ``tau`` taken from ``tau_grid``;
    - ``mixup``: class-balanced draws as ``oversample``, each training batch blended with itself
      reordered, images and labels alike (Zhang et al., 2018; `lib.core.minority`). Not in the
      default list, so that params without ``methods`` keep their results; params/default.yaml lists it.

    The method with the best validation ``selection_metric`` is used for every round's headline
    results; the test split never takes part in the choice.

    ``tau_grid`` defaults to the single value 1, the adjustment that is consistent for balanced
    error (Menon et al.), so nothing is fitted to the validation images. A grid of several values
    tunes ``tau`` on validation, the same images that then rank the methods: logit adjustment
    then gets a free parameter fitted to them and the others do not, which flatters it in the
    comparison (with two rare validation images, by a lot).
    """

    methods: list[Literal[tuple(METHODS)]] = Field(
        default=["class_weight", "oversample", "logit_adjustment"], min_length=1
    )
    selection_metric: Literal[tuple(SELECTION_METRICS)] = "macro_f1"
    tau_grid: list[Annotated[float, Field(ge=0.0, le=5.0)]] = Field(
        default=[1.0], min_length=1
    )

    _distinct_methods = field_validator("methods")(lambda value: distinct(value, "methods"))


class TrainingParams(_Section):
    """What both models share."""

    batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    backend: Literal[("auto", *BACKENDS)] = Field(
        default="auto",
        description="Keras backend. 'auto': KERAS_BACKEND when set; else JAX where JAX sees a GPU or TPU, else "
        "TensorFlow (else JAX, else PyTorch, whichever is installed); see lib.core.backends.resolve_backend.",
    )
    deterministic: bool = Field(
        default=True,
        description="The backend's deterministic operations (TensorFlow op determinism, XLA's deterministic GPU "
        "ops for JAX, PyTorch's deterministic algorithms): same params, seed, backend and machine, same numbers.",
    )
    verbose: Literal[0, 1, 2] = Field(default=2, description="Keras fit verbosity (2: one line per epoch).")
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = Field(
        default="auto",
        description="Keras dtype policy. 'auto': mixed_bfloat16 on a GPU of compute capability 8 or more (and on "
        "TPUs), mixed_float16 on older GPUs, mixed_bfloat16 on a CPU with "
        "bfloat16 arithmetic (AVX-512 BF16 or AMX), float32 on other CPUs, where bfloat16 is emulated and "
        "7-10x slower (see lib.training.models.auto_precision and benchmarks/RESULTS.md).",
    )
    data_workers: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = Field(
        default="auto",
        description="Worker threads that read and augment the next batches while the model trains "
        "(lib.data.inputs.Batches); 0: none, in the training loop itself. 'auto': 1 where the CPU trains the "
        "model (its cores run TensorFlow's arithmetic), one per CPU, at most 8, where an accelerator does. "
        "The batches, and so the numbers, are the same with any number.",
    )


class PhaseParams(_Section):
    """One call of ``fit``: optimiser step size and schedule, epoch budget, early stopping on val_loss.

    The defaults (constant step size, no weight decay, no label smoothing: Adam on plain
    cross-entropy) are the original study's; the strong protocols (`STRONG_PROTOCOLS`) use the rest.
    """

    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)]
    epochs: Annotated[int, Field(ge=1, le=1000)]
    patience: Annotated[int, Field(ge=1, le=1000)]
    schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="'cosine': the step size decays to 0 along a cosine over the epoch budget "
        "(Loshchilov & Hutter, SGDR, 2017), after the warm-up."
    )
    warmup_epochs: Annotated[int, Field(ge=0, le=100)] = Field(
        default=0, description="Epochs over which the step size rises linearly from 0 to learning_rate (Goyal et "
        "al., 2017): the first updates of a freshly unfrozen network do not wreck its pretrained weights."
    )
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.0, description="Decoupled weight decay (AdamW, Loshchilov & Hutter, 2019); 0: plain Adam."
    )
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.0, description="Share of each target spread evenly over the classes (Szegedy et al., 2016)."
    )

    @model_validator(mode="after")
    def _warmup_within_budget(self) -> PhaseParams:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        return self


# The strong protocols (`cnn.protocol` / `mobilenet_v2.protocol: strong`) fill the fields a params file leaves
# out; a field the file sets wins. Why these values:
# - MobileNetV2: the whole base is fine-tuned (fine_tune_layers: all), BatchNorm kept in inference mode, after the
#   head has converged on the frozen features (phase 1 as in the original): the recipe of Kornblith et al.
#   (2019, "Do better ImageNet models transfer better?"), where full fine-tuning beat fixed features on every
#   fine-grained task. AdamW at 1e-4 (ten times the original's 1e-5, which only suits 20 layers) with a 2-epoch
#   linear warm-up and cosine decay over 30 epochs, weight decay 0.01 and label smoothing 0.1 are the usual
#   fine-tuning settings of timm/DeiT-style recipes scaled to batch 32; early stopping (patience 6) on the
#   validation split keeps the best epoch. Nothing here was tuned on test images.
# - The CNN: the same schedule, weight decay and label smoothing at its own step size and epoch budget: all cheap,
#   so that the comparison stays fair (the CNN is not left with a weaker optimiser).
STRONG_PROTOCOLS = {
    "cnn": {
        "training": {"learning_rate": 1e-3, "epochs": 25, "patience": 5, "schedule": "cosine", "warmup_epochs": 1,
                     "weight_decay": 0.01, "label_smoothing": 0.1},
    },
    "mobilenet_v2": {
        "fine_tune_layers": "all",
        "fine_tune": {"learning_rate": 1e-4, "epochs": 30, "patience": 6, "schedule": "cosine", "warmup_epochs": 2,
                      "weight_decay": 0.01, "label_smoothing": 0.1},
    },
}


class CNNParams(_Section):
    """The study's custom CNN: three Conv2D + MaxPool blocks, a dense layer, dropout."""

    protocol: Literal["original", "strong"] = Field(
        default="original", description="'original': Adam at a constant step size, as the study; 'strong': "
        "cosine schedule with warm-up, weight decay and label smoothing (config.STRONG_PROTOCOLS).",
    )
    conv_filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(default=[32, 64, 128], min_length=1)
    kernel_size: Annotated[int, Field(ge=1, le=11)] = 3
    dense_units: Annotated[int, Field(ge=1)] = 128
    dropout: UnitInterval = 0.5
    training: PhaseParams = PhaseParams(learning_rate=1e-3, epochs=25, patience=5)


class MobileNetV2Params(_Section):
    """MobileNetV2 transfer learning: frozen ImageNet base + new head, then fine-tuning."""

    protocol: Literal["original", "strong"] = Field(
        default="original", description="'original': the study's (base frozen, then its last 20 layers at 1e-5); "
        "'strong': the whole base fine-tuned with warm-up, cosine decay, weight decay and label smoothing "
        "(config.STRONG_PROTOCOLS).",
    )
    weights: Literal["imagenet"] | None = Field(
        default="imagenet", description="'imagenet' (from Keras' cache or downloaded) or null (random)."
    )
    dense_units: Annotated[int, Field(ge=1)] = 128
    dropout: UnitInterval = 0.5
    head: PhaseParams = PhaseParams(learning_rate=1e-3, epochs=10, patience=3)
    fine_tune_layers: Annotated[int, Field(ge=0, le=154)] | Literal["all"] = Field(
        default=20, description="How many of the base's last layers phase 2 unfreezes, or 'all' (BatchNorm stays "
        "frozen either way)."
    )
    fine_tune: PhaseParams = PhaseParams(learning_rate=1e-5, epochs=5, patience=3)
    activation_cache: bool = Field(
        default=True,
        description="Run the frozen layers once per input and train on their cached outputs "
        "(same computation, several times faster); false recomputes them every epoch.",
    )
    augmented_views: Annotated[int, Field(ge=1, le=100)] = Field(
        default=2,
        description="With the activation cache: augmented views cached per training image; "
        "epoch e trains on view e mod augmented_views.",
    )


class ReportParams(_Section):
    """The report's wording."""

    subject: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)] | None = Field(
        default=None,
        description="What the images show, as the report's title and abstract name it (e.g. 'product photographs'); "
        "null: 'product photographs' for the Grocery Store dataset, 'images' for a folder or manifest.",
    )


class TrackingParams(_Section):
    """Where the run is logged for browsing and comparing runs (MLflow, `lib.pipeline.tracking`): a view of the
    run folders, never an input of a step, so that changing it reuses every step."""

    enabled: bool = Field(default=True, description="Log every published run and every step a notebook computes "
                          "by hand; false logs nothing.")
    uri: TrackingURI | None = Field(default=None, description="An MLflow tracking URI (sqlite:///reports/mlruns.db, "
                                    "http://host:5000; a relative SQLite path is from the project root); null: "
                                    "MLFLOW_TRACKING_URI when set, else sqlite:///<reports_dir>/mlruns.db.")
    experiment: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        default="product-image-study", description="The MLflow experiment the runs are logged under.")


class Params(_Section):
    """All parameters of one run of the study."""

    run_name: RunName = "default"
    reports_dir: Path = Path("reports")
    scratch_runs_kept: int = Field(default=3, ge=1)  # of reports/.scratch/ (lib.pipeline.interactive); no result
    seed: int = Field(
        default=42,
        description="Seed of what is not repeated (the audit's samples); each round's training and split "
        "use the round's seed (see 'evaluation').",
    )
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    augmentation: AugmentationParams = AugmentationParams()
    audit: AuditParams = AuditParams()
    evaluation: EvaluationParams = EvaluationParams()
    minority: MinorityParams = MinorityParams()
    training: TrainingParams = TrainingParams()
    cnn: CNNParams = CNNParams()
    mobilenet_v2: MobileNetV2Params = MobileNetV2Params()
    report: ReportParams = ReportParams()
    tracking: TrackingParams = TrackingParams()

    @field_validator("run_name")
    @classmethod
    def _not_a_file_of_reports(cls, value: str) -> str:
        if value in RESERVED_RUN_NAMES:
            raise ValueError(f"{value!r} is the name of a file the study writes in reports_dir; "
                             f"a run_name cannot be any of {sorted(RESERVED_RUN_NAMES)}")
        return value

    @field_validator("reports_dir")
    @classmethod
    def _resolve_reports(cls, value: Path) -> Path:
        return (PROJECT_ROOT / value).resolve()

    def to_dict(self) -> dict:
        """Plain JSON-able values, e.g. for the report's appendix."""
        return json.loads(self.model_dump_json())

    def study_values(self) -> dict:
        """Every value that shapes the results: all but where they are kept and logged (``reports_dir``,
        ``scratch_runs_kept``, ``tracking``)."""
        return {key: value for key, value in self.to_dict().items()
                if key not in ("reports_dir", "scratch_runs_kept", "tracking")}

    def fingerprint(self) -> str:
        """A short hash of the study's values: two runs with the same fingerprint used the same params
        (wherever they keep their reports)."""
        canonical = json.dumps(self.study_values(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:12]


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid parameter(s):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and section)"
        got = item.get("input")
        shown = "" if isinstance(got, dict) or item["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  - {field}: {message}{shown}")
    return "\n".join(lines)


def parse_params(values: dict | None, source: str = "params") -> Params:
    """Validate a dict of parameters; every field it leaves out, at any depth, takes its default."""
    values = dict(values or {})
    for section, strong in STRONG_PROTOCOLS.items():  # a strong protocol's settings, under the file's own
        if isinstance(values.get(section), dict) and values[section].get("protocol") == "strong":
            values[section] = laid_over(strong, values[section])
    try:
        return Params.model_validate(laid_over(Params().model_dump(mode="json"), values))
    except ValidationError as error:
        raise ParamsError(_format_errors(error, source)) from None


def load_params(path: str | Path, overrides: dict[str, object] | list[str] | None = None) -> Params:
    """Read and validate a YAML params file (with a safe loader: YAML cannot run code), with ``overrides``
    (`nested_overrides`) laid over it; both are validated together, by the same schema."""
    path = Path(path)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise ParamsError(f"params file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if values is not None and not isinstance(values, dict):
        raise ParamsError(f"{path}: expected a mapping of parameters, got {type(values).__name__}")
    try:
        changes = nested_overrides(overrides)
    except ValueError as error:
        raise ParamsError(str(error)) from None
    source = f"{path} with overrides {', '.join(override_words(overrides))}" if changes else str(path)
    return parse_params(laid_over(values or {}, changes), source=source)
