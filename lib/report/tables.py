"""The report's tables: the protocol as configured, the statistics, the methods, the run's own record."""

from __future__ import annotations

import pandas as pd
import yaml

from lib.analysis.stats import percent
from lib.core.backends import BACKEND_TITLES
from lib.core.study import MODELS
from lib.report.document import count
from lib.report.plots import visible

PRECISION_WORDS = {
    "float32": "float32",
    "mixed_bfloat16": "mixed bfloat16 (weights float32, layers compute in bfloat16, outputs float32)",
    "mixed_float16": "mixed float16 (weights float32, layers compute in float16, outputs float32)",
}


PROTOCOL_WORDS = {
    "original": "original (Adam at a constant step size)",
    "strong": "strong (warm-up, cosine decay, weight decay, label smoothing)",
}


def phase_words(phase) -> str:
    """One training phase (`lib.core.config.PhaseParams`) in words: optimiser, step size and schedule, loss, budget."""
    words = f"{'AdamW' if phase.weight_decay else 'Adam'} lr {phase.learning_rate:g}"
    if phase.warmup_epochs:
        words += f" after a {phase.warmup_epochs}-epoch linear warm-up"
    if phase.schedule == "cosine":
        words += ", cosine decay"
    if phase.weight_decay:
        words += f", weight decay {phase.weight_decay:g}"
    if phase.label_smoothing:
        words += f", label smoothing {phase.label_smoothing:g}"
    return words + f", ≤ {phase.epochs} epochs, patience {phase.patience}"


def runtime_words(runtime: dict | None) -> str:
    """Backend, its version and the devices a model trained on (``metrics["runtime"]``, `lib.core.devices.Devices`),
    e.g. "JAX 0.10.2 (Keras 3.15.1) on 2 × NVIDIA H100 80GB HBM3, data-parallel over 2 devices"."""
    if not runtime:
        return "not recorded"
    words = (f"{BACKEND_TITLES.get(runtime['backend'], runtime['backend'])} {runtime['backend_version']} "
             f"(Keras {runtime['keras_version']}) on {runtime['description']}")
    if runtime.get("replicas", 1) > 1:
        words += f", data-parallel over {runtime['replicas']} devices (global batch {runtime.get('batch_size', '?')})"
    elif runtime.get("count", 1) > 1:
        words += ", trained on one of them"
    return words


def protocol_table(params, precision: dict[str, str] | None = None,
                  runtime: dict[str, dict | None] | None = None) -> pd.DataFrame:
    """The training protocol actually used, both models side by side.

    ``precision``: the dtype policy each model's notebook recorded (``metrics["precision"]``),
    by model name, since ``training.precision: auto`` depends on the machine; ``runtime``: the
    backend and devices each recorded (``metrics["runtime"]``), by model name.
    """
    cnn, mob, tr, aug = params.cnn, params.mobilenet_v2, params.training, params.augmentation
    rows = {
        "input": (f"{params.data.image_size[0]}×{params.data.image_size[1]} RGB, scaled to [0, 1]",
                  f"{params.data.image_size[0]}×{params.data.image_size[1]} RGB, scaled to [-1, 1]"),
        "architecture": (
            " → ".join(f"Conv{cnn.kernel_size}×{cnn.kernel_size}({f})+MaxPool" for f in cnn.conv_filters)
            + f" → Dense({cnn.dense_units}) → Dropout({cnn.dropout})",
            f"MobileNetV2 ({mob.weights or 'random'} weights) → GAP → Dense({mob.dense_units}) → Dropout({mob.dropout})",
        ),
        "protocol": (PROTOCOL_WORDS[cnn.protocol], PROTOCOL_WORDS[mob.protocol]),
        "phase 1": (phase_words(cnn.training), "base frozen; " + phase_words(mob.head)),
        "phase 2": (
            "–",
            ("whole base" if mob.fine_tune_layers == "all" else f"last {mob.fine_tune_layers} base layers")
            + " unfrozen (BatchNorm frozen, in inference mode); " + phase_words(mob.fine_tune),
        ),
    }
    if mob.activation_cache:
        views = mob.augmented_views
        cached = (
            "frozen layers run once per input, not every epoch: each training image enters as "
            f"{count(views, 'fixed augmented view')}, epoch e training on view e mod {views} (validation and test images, not "
            "augmented, are computed exactly as without the cache)"
        )
        if mob.fine_tune_layers == "all":
            cached = (f"phase 1: the frozen base runs once per input ({count(views, 'fixed augmented view')} of each "
                      "training image); phase 2: the whole base trains on pixels, new random augmentation every epoch")
    else:
        cached = "frozen layers recomputed on every image in every epoch; new random augmentation every epoch"
    rows["training inputs"] = ("images decoded once; new random augmentation every epoch", cached)
    shared = (
        f"batch {tr.batch_size}; minority-class methods compared on validation: "
        f"{', '.join(params.minority.methods)}; early stopping on val_loss, best epoch kept; "
        f"augmentation: rotation ±{aug.rotation_degrees:g}°, shifts {aug.width_shift:g}/{aug.height_shift:g}, "
        f"shear {aug.shear:g}, zoom {aug.zoom:g}, horizontal flip {'on' if aug.horizontal_flip else 'off'}"
    )
    rows["both"] = (shared, shared)
    ev = params.evaluation
    rounds = (f"repeated hold-out: one round per seed {ev.seeds}" if ev.scheme == "holdout"
              else f"stratified {ev.folds}-fold cross-validation for each seed {ev.seeds}")
    grouping = "near-duplicate groups kept whole" if params.split.group_near_duplicates else "no grouping"
    rows["evaluation"] = (f"{rounds}; {grouping}",) * 2
    models = [model.title for model in MODELS.values()]
    if precision:
        rows["numeric precision"] = tuple(PRECISION_WORDS.get(precision.get(m, "?"), precision.get(m, "?"))
                                          + f" (training.precision: {tr.precision})" for m in models)
    if runtime:
        rows["backend and devices"] = tuple(runtime_words(runtime.get(m)) + f" (training.backend: {tr.backend})"
                                            for m in models)
    return pd.DataFrame(rows, index=models).T


PARAMETER_WORDS = {"total": "total", "trainable": "trainable", "non_trainable": "not trainable",
                   "trainable_phase1": "trainable in phase 1", "trainable_phase2": "trainable in phase 2",
                   "unfrozen_layers": "layers unfrozen in phase 2"}


def parameters_table(parameters: dict[str, dict]) -> pd.DataFrame:
    """Each model's parameter counts (``metrics["parameters"]``, by model name) in words, thousands separated; a
    count a model does not have (the CNN has one phase) is a dash."""
    table = pd.DataFrame(parameters).rename(index=PARAMETER_WORDS)
    return table.apply(lambda column: column.map(lambda n: "–" if pd.isna(n) else f"{int(n):,}"))


def mcnemar_table(mcnemar: pd.DataFrame) -> pd.DataFrame:
    """McNemar's test per round (`lib.analysis.compare.paired_tests`) with its columns in words."""
    first, second = mcnemar["first"].iloc[0], mcnemar["second"].iloc[0]
    return mcnemar[["only_a", "only_b", "p_value"]].apply(pd.to_numeric).rename(columns={
        "only_a": f"right only for {first}", "only_b": f"right only for {second}", "p_value": "p (two-sided)"})


def most_confused_table(most_confused: pd.DataFrame, per_model: int = 5) -> pd.DataFrame:
    """Each model's ``per_model`` most-confused (true, predicted) pairs, readable column names."""
    top = most_confused.groupby("model", sort=False).head(per_model)
    return top.rename(columns={"true_label": "true class", "predicted_label": "predicted as", "count": "test images"})


def statistics_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows: metrics; columns: models; cells 'mean ± std [low, high]'."""
    cells = summary.apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f} [{r['low']:.3f}, {r['high']:.3f}]", axis=1)
    table = cells.unstack("model")
    return table.reindex(index=summary.index.get_level_values("metric").unique(),
                         columns=summary.index.get_level_values("model").unique()).rename_axis(index="metric", columns=None)


def difference_table(difference: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Rows: metrics; columns: the paired difference 'second − first' (`lib.analysis.compare.difference_across_rounds`)
    and its interval, at ``confidence`` (the verdict's: ``evaluation.confidence``)."""
    name = f"{difference['second'].iloc[0]} − {difference['first'].iloc[0]}"
    return difference[["difference", "low", "high"]].rename(
        columns={"difference": name, "low": f"{percent(confidence)} low", "high": f"{percent(confidence)} high"})


def methods_report_table(methods: pd.DataFrame) -> pd.DataFrame:
    """The minority-class methods on the validation split (the choice) and the test split (for the record)."""
    columns = {"minority_images": "minority images", "minority_prf": "minority P / R / F1",
               "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy", "log_loss": "log-loss"}
    # Precision, recall and F1 share one column (without spaces, so that it does not wrap), so that
    # the table fits a printed page.
    rare = methods[["minority_precision", "minority_recall", "minority_f1"]]
    table = methods.assign(minority_prf=["/".join(f"{v:.2f}" for v in row) for row in rare.to_numpy()])
    table = table.rename(columns=columns).assign(chosen=lambda t: t["chosen"].map({True: "yes", False: ""}))
    table = table.set_index(["model", "method", "split"])[[*columns.values(), "tau", "chosen"]]
    return table.sort_index(level="split", ascending=False, sort_remaining=False)


class _VisibleDumper(yaml.SafeDumper):
    """YAML that writes a string holding a control character (a tab or a newline in a class name) double-quoted,
    where YAML itself writes it as an escape (``\\t``), rather than folding it over several lines; and a list of
    plain values on one line (``seeds: [42, 43, 44]``)."""


_VisibleDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style='"' if visible(value) != value else None))
_VisibleDumper.add_representer(list, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", value, flow_style=not any(isinstance(item, (list, dict)) for item in value)))


def params_yaml(params) -> str:
    """The run's params as YAML, one field a line (the report's appendix: `lib.report.document.preformatted`)."""
    return yaml.dump(params.to_dict(), Dumper=_VisibleDumper, sort_keys=False, allow_unicode=True)


def epochs_cell(epoch_seconds: dict | None) -> str:
    """A model step's epochs per phase, as count, median / slowest seconds, e.g. "training 25: 10.5 / 12.0"
    (short enough for a printed page); "" for other steps."""
    return "; ".join(f"{phase} {e['epochs']}: {e['median']:.1f} / {e['slowest']:.1f}"
                     for phase, e in (epoch_seconds or {}).items())


def steps_table(steps: dict) -> pd.DataFrame:
    """Wall time and peak memory of each step, a model step's epoch times (median and slowest per phase: an uneven
    machine shows there), and whether it was reused from the previous run (inputs unchanged)."""
    return pd.DataFrame(
        {
            "wall time (s)": [entry.get("seconds") for entry in steps.values()],
            "peak memory (GiB)": [entry.get("peak_rss_gib") for entry in steps.values()],
            "epochs: count, median / slowest (s)": [epochs_cell(entry.get("epoch_seconds")) for entry in steps.values()],
            "this run": ["reused" if entry.get("reused") else "ran" for entry in steps.values()],
        },
        index=pd.Index(list(steps), name="step"),
    )
