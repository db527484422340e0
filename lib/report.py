"""The academic report: numbered figures and tables, sentences generated from the run's numbers, rendering.

The report notebook (``notebooks/05_report.ipynb``) calls the ``*_html`` functions here,
each of which turns the artefacts of the run (the audit's summary, the models' metrics, and
the comparison's tables and verdict, `lib.compare.Comparison`) into a section's text; no
statistic is computed here and nothing about results is typed by hand, so another dataset gets a correct report. Every value that
comes from the data (class names, file names) is HTML-escaped: a class folder called
``<b>x</b>`` shows as that text. `render` then turns the executed notebook into HTML
without any code, and the HTML into a PDF with WeasyPrint.
"""

from __future__ import annotations

import base64
import io
import html
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import yaml

from lib.backends import BACKEND_TITLES
from lib.compare import MODELS, Comparison, ModelResults, compared_models
from lib.paths import PROBE_NAME
from lib.plots import visible
from lib.minority import METHODS
from lib.probe import above_probe_sentence, below_probe_warning

STYLE = Path(__file__).with_name("report.css")


def escape(text) -> str:
    """Data (a class or file name) as HTML text: markup escaped, control characters shown as escapes."""
    return html.escape(visible(text))


# --------------------------------------------------------------------------------------
# Numbered figures and tables
# --------------------------------------------------------------------------------------


class Document:
    """Hands out figure and table numbers, and turns figures and tables into captioned HTML."""

    def __init__(self) -> None:
        self.figures = 0
        self.tables = 0

    def figure(self, fig: plt.Figure, caption: str, width: str = "100%") -> str:
        """The figure as an embedded PNG with "Figure N." and its caption (the figure is closed)."""
        self.figures += 1
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode()
        return (
            f'<figure><img src="data:image/png;base64,{data}" style="width:{width}" alt="Figure {self.figures}"/>'
            f"<figcaption><b>Figure {self.figures}.</b> {caption}</figcaption></figure>"
        )

    def table(self, table: pd.DataFrame, caption: str, float_format: str = "{:.3f}", index: bool = True) -> str:
        """The table with "Table N." and its caption above it; cell values are escaped."""
        self.tables += 1
        body = table.to_html(
            escape=True, index=index, border=0, float_format=float_format.format, classes="data", na_rep="–"
        )
        return f'<div class="table"><p class="caption"><b>Table {self.tables}.</b> {caption}</p>{body}</div>'


# --------------------------------------------------------------------------------------
# Words that follow the numbers
# --------------------------------------------------------------------------------------


def formatted(table: pd.DataFrame, count_rows=(), decimals: int = 3) -> pd.DataFrame:
    """Each row as text: the ``count_rows`` with thousands separators, the others with ``decimals``."""
    def row_format(row: pd.Series) -> pd.Series:
        pattern = "{:,.0f}" if row.name in count_rows else f"{{:.{decimals}f}}"
        return pd.to_numeric(row).map(pattern.format)

    return table.apply(row_format, axis=1)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the right number: '1 round', '3 rounds', '2 classes' (``plural`` when not noun + 's')."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


# The replication's data: the original study's five classes, its 14-image class, from Grocery Store
# (params/default.yaml). Sentences about the original study appear only in a report on this data.
REPLICATION_DATA = {"source": "grocery_store",
                    "grocery_store": {"label_level": "coarse", "classes": ["Apple", "Juice", "Yoghurt", "Milk", "Oat-Milk"],
                                      "max_per_class": {"Oat-Milk": 14}}}


def is_replication(params) -> bool:
    """Whether the run studies the replication's data (whatever its other params)."""
    data = params.to_dict()["data"]
    return data["source"] == REPLICATION_DATA["source"] and data["grocery_store"] == REPLICATION_DATA["grocery_store"]


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def compare_words(a: float, b: float, higher: str = "higher", lower: str = "lower", same: str = "the same") -> str:
    """'higher', 'lower' or 'the same' for a against b (at the precision the report prints)."""
    if round(a, 3) == round(b, 3):
        return same
    return higher if a > b else lower


def smallest_class(audit: dict) -> tuple[str, int]:
    counts = audit["classes"]
    name = min(counts, key=counts.get)
    return name, counts[name]


def _ranked(results: dict[str, ModelResults], key: str = "macro_f1") -> list[ModelResults]:
    return sorted(results.values(), key=lambda r: r.metrics[key], reverse=True)


def abstract_html(audit: dict, comparison: Comparison, replication: bool, grouped: bool) -> str:
    """The abstract: dataset, rounds, both models' mean macro-F1 with intervals, the smallest class's F1;
    the original study's score only for the ``replication``; what ``grouped`` (near-duplicate groups kept
    whole) did to the splits."""
    small, small_n = smallest_class(audit)
    summary = compared_models(comparison.summary)
    f1 = summary.xs("macro-F1", level="metric").sort_values("mean", ascending=False)
    (best, b), (other, o) = list(f1.iterrows())[:2]
    rare = summary.xs(f"F1: {small}", level="metric")
    trainable = comparison.first_round.loc["trainable parameters"].astype(int)
    leaks = sum(row["test images with a training near-duplicate (used)"] for row in audit["leaks_by_round"])
    rounds = int(b["rounds"])
    over = (f"Over {count(rounds, 'evaluation round')}, each with its own split and seed," if rounds > 1
            else "In one evaluation round,")
    original = " (the original study: 0.00 for both)" if replication else ""
    remaining = f"{count(leaks, 'test image')} with a near-duplicate in training {'remains' if leaks == 1 else 'remain'}"
    splits = (f"Splits keep near-duplicate photographs together ({remaining})" if grouped
              else f"Near-duplicate grouping was switched off ({remaining})")
    return (
        "<p>We compare a convolutional network trained from scratch with MobileNetV2 transfer learning for "
        f"classifying product photographs, on {count(audit['images_usable'], 'image')} in "
        f"{count(len(audit['classes']), 'class', 'classes')} whose smallest class, <i>{escape(small)}</i>, has "
        f"only {count(small_n, 'image')}. {over} {escape(best)} reaches a mean macro-F1 of "
        f"{b['mean']:.3f} (95 % interval {b['low']:.3f}–{b['high']:.3f}) against {o['mean']:.3f} "
        f"({o['low']:.3f}–{o['high']:.3f}) for {escape(other)}, while training {trainable[best]:,} parameters "
        f"against {trainable[other]:,}. On the smallest class the mean F1 is {rare.loc[best, 'mean']:.2f} for "
        f"{escape(best)} and {rare.loc[other, 'mean']:.2f} for {escape(other)}{original}. {splits}, and the "
        f"test split never takes part in any choice.{probe_abstract_sentence(comparison.probe_check)}</p>"
    )


def probe_abstract_sentence(checks: pd.DataFrame) -> str:
    """A sentence for the abstract when any round's fine-tuned MobileNetV2 is below its linear probe on
    validation (`lib.probe`), else nothing."""
    below = int(checks["below_probe"].astype(bool).sum()) if len(checks) else 0
    if not below:
        return ""
    rounds = "its one round" if len(checks) == 1 else f"{below} of {count(len(checks), 'round')}"
    return (f" <b>In {rounds}, the fine-tuned MobileNetV2 scored below a linear probe on its own frozen ImageNet "
            "features on validation</b>: its comparison with the CNN reflects how it was trained here, not what "
            "transfer learning can do (see the results).")


def probe_html(checks: pd.DataFrame, params) -> str:
    """The sanity floor of transfer learning in words: what the linear probe is, and either the warning of
    `lib.probe.below_probe_warning` (any round's fine-tuned model below its probe on validation) or that
    fine-tuning cleared the floor."""
    what = (f"<p>A sanity floor for transfer learning: the linear probe (“{escape(PROBE_NAME)}” in the tables) is "
            "a logistic regression (scikit-learn, standardised features, no parameter tuned) on the pooled output of "
            "MobileNetV2's frozen ImageNet base for the un-augmented training images, trained in every round with "
            "the round's minority-class method. Fine-tuning starts from these features and should score at least "
            "as well. ")
    warning = below_probe_warning(checks, params) if len(checks) else None
    if warning is None:
        return what + escape(above_probe_sentence(checks)) + "</p>"
    return what + f'</p><p class="warning"><b>{escape(warning)}</b></p>'


def introduction_html(params, audit: dict) -> str:
    """The introduction: for the replication, the study it replicates and what we do differently; for any other
    data, that data (source, classes, sizes) and the question the report answers on it."""
    grouped = params.split.group_near_duplicates
    how = ("on several splits that keep near-duplicate photographs together" if grouped
           else "on several splits (near-duplicate grouping switched off)")
    rounds = len(params.evaluation.seeds) * (params.evaluation.folds if params.evaluation.scheme == "kfold" else 1)
    if rounds == 1:
        how = how.replace("on several splits", "on one split")
    if is_replication(params):
        return (
            "<p>Recognising products from photographs taken in shops is a small-data problem: a few hundred images "
            "per product, and some products photographed only a handful of times. The study we replicate compared "
            "two answers to it on 1,909 product photographs in five classes, one of which had only 14 images: a "
            "small convolutional network (CNN) trained from scratch, and MobileNetV2 pretrained on ImageNet and "
            "adapted by transfer learning. Its open problems were class imbalance, the small dataset and "
            "overfitting; both of its models scored an F1 of zero on the 14-image class, and its test images leaked "
            "into training; it also fed MobileNetV2 pixels in [0, 1], not the [−1, 1] its ImageNet weights expect. "
            "We repeat the comparison on open data (the Grocery Store dataset, Klasson et al., 2019: "
            f"five of its coarse classes, one sampled down to 14 images), {how}, with the minority-class method "
            "chosen on validation data only, and report every number, interval and test from the run itself.</p>"
        )
    counts = audit["classes"]
    small, large = min(counts, key=counts.get), max(counts, key=counts.get)
    return (
        "<p>This report compares two ways to classify product photographs on the data of this run: a small "
        "convolutional network (CNN) trained from scratch, and MobileNetV2 pretrained on ImageNet and adapted by "
        f"transfer learning. The data: {escape(source_description(params))}, "
        f"{count(audit['images_usable'], 'usable image')} in {count(len(counts), 'class', 'classes')}, from "
        f"<i>{escape(large)}</i> ({count(counts[large], 'image')}) down to <i>{escape(small)}</i> "
        f"({count(counts[small], 'image')}). Both models are trained and tested {how}, with the minority-class "
        "method chosen on validation data only; every number, interval and test comes from the run itself.</p>"
    )


def source_description(params) -> str:
    """Where the run's images come from, in words (a folder or manifest by its name, not its whole path)."""
    data = params.data
    if data.source == "folder":
        return f"the image folder “{data.directory.name}” (one sub-folder per class)"
    if data.source == "manifest":
        return f"the images listed in “{data.manifest.name}”, with the split it gives"
    chosen = data.grocery_store
    which = "all" if chosen.classes is None else "a selection"
    return f"{which} of the {chosen.label_level} classes of the Grocery Store dataset (Klasson et al., 2019)"


REFERENCES = {
    "grocery": "M. Klasson, C. Zhang, H. Kjellström. <i>A Hierarchical Grocery Store Image Dataset with Visual and "
               "Semantic Labels.</i> IEEE Winter Conference on Applications of Computer Vision (WACV), 2019.",
    "mobilenetv2": "M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. <i>MobileNetV2: Inverted Residuals and "
                   "Linear Bottlenecks.</i> CVPR, 2018.",
    "imagenet": "J. Deng, W. Dong, R. Socher, L.-J. Li, K. Li, L. Fei-Fei. <i>ImageNet: A Large-Scale Hierarchical "
                "Image Database.</i> CVPR, 2009.",
    "logit_adjustment": "A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain, A. Veit, S. Kumar. <i>Long-tail learning "
                        "via logit adjustment.</i> ICLR, 2021.",
    "grad_cam": "R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra. <i>Grad-CAM: Visual "
                "Explanations from Deep Networks via Gradient-based Localization.</i> ICCV, 2017.",
    "keras": "F. Chollet et al. <i>Keras.</i> https://keras.io, 2015–; <i>Transfer learning &amp; fine-tuning</i> guide.",
    "sklearn": "F. Pedregosa et al. <i>Scikit-learn: Machine Learning in Python.</i> JMLR 12, 2011.",
}


def references_html(params) -> str:
    """The works this run's report rests on, numbered: the dataset only when the run uses it, logit adjustment
    only when it was compared."""
    keys = [key for key in REFERENCES
            if (key != "grocery" or params.data.source == "grocery_store")
            and (key != "logit_adjustment" or "logit_adjustment" in params.minority.methods)]
    return "<ol>" + "".join(f"<li>{REFERENCES[key]}</li>" for key in keys) + "</ol>"


def data_html(audit: dict, image_size: tuple[int, int]) -> str:
    small, small_n = smallest_class(audit)
    large = max(audit["classes"], key=audit["classes"].get)
    sizes = audit["split_sizes"]
    excluded = audit["files_excluded"]
    return (
        f"<p>The audit examined {audit['files_examined']:,} files and kept {audit['images_usable']:,} images "
        f"({excluded} excluded as unreadable or not images). The largest class, <i>{escape(large)}</i>, has "
        f"{audit['classes'][large]:,} images and the smallest, <i>{escape(small)}</i>, {small_n}: an imbalance "
        f"ratio of {audit['imbalance_ratio']:.1f} to 1. The first evaluation round's stratified split "
        f"gives {sizes.get('train', 0):,} training, {sizes.get('val', 0):,} validation and "
        f"{sizes.get('test', 0):,} test images. All images are resized to {image_size[0]} × {image_size[1]} "
        f"pixels.</p><p>Exact duplicates (identical bytes): {count(audit['exact_duplicate_pairs'], 'pair')}, "
        f"{audit['exact_duplicate_pairs_across_splits']} of them across splits. Near-duplicates (perceptual "
        f"hashes within the audit's threshold): {count(audit['near_duplicate_pairs'], 'pair')}, "
        f"{audit['near_duplicate_pairs_across_splits']} across splits; "
        f"{count(audit['test_images_with_a_train_duplicate'], 'test image')} of the first round "
        f"{'has' if audit['test_images_with_a_train_duplicate'] == 1 else 'have'} a near-duplicate in training.</p>"
        + grouping_html(audit)
    )


def grouping_html(audit: dict) -> str:
    """What near-duplicate grouping found, and the leaks before and after it, from the audit's summary."""
    leaks = pd.DataFrame(audit["leaks_by_round"])
    plain, used = (leaks[f"test images with a training near-duplicate ({kind})"] for kind in ("plain", "used"))
    thresholds = audit["thresholds"]
    how = (
        "Every split keeps these groups whole" if audit["group_near_duplicates"]
        else "Grouping is switched off (split.group_near_duplicates), so the splits ignore these groups"
    )
    return (
        f"<p>Photographs of one product taken in one session look alike without being copies. Pairs of images "
        f"whose ImageNet MobileNetV2 features have a cosine similarity of at least "
        f"{thresholds['feature_min_similarity']} ({count(audit['feature_duplicate_pairs'], 'pair')}), or whose perceptual "
        f"hashes differ by at most {thresholds['phash_max_distance']} bits, are joined into near-duplicate groups: "
        f"{audit['near_duplicate_groups']:,} groups, the largest of {audit['largest_group']} images. {how}. "
        f"Test images with a near-duplicate in training, over {'the ' + count(len(leaks), 'round') if len(leaks) > 1 else 'the one round'}: "
        f"{int(plain.sum())} with plain stratified splits, <b>{int(used.sum())}</b> with the splits used.</p>"
    )


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
    """One training phase (`lib.config.PhaseParams`) in words: optimiser, step size and schedule, loss, budget."""
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
    """Backend, its version and the devices a model trained on (``metrics["runtime"]``, `lib.devices.Devices`),
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


def methods_table(params, precision: dict[str, str] | None = None,
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
    models = list(MODELS.values())
    if precision:
        rows["numeric precision"] = tuple(PRECISION_WORDS.get(precision.get(m, "?"), precision.get(m, "?"))
                                          + f" (training.precision: {tr.precision})" for m in models)
    if runtime:
        rows["backend and devices"] = tuple(runtime_words(runtime.get(m)) + f" (training.backend: {tr.backend})"
                                            for m in models)
    return pd.DataFrame(rows, index=models).T


def results_html(results: dict[str, ModelResults]) -> str:
    best, other = _ranked(results)
    b, o = best.metrics, other.metrics
    return (
        f"<p>{escape(best.name)} reaches {pct(b['accuracy'])} test accuracy against {pct(o['accuracy'])} for "
        f"{escape(other.name)}, a difference of {100 * (b['accuracy'] - o['accuracy']):.1f} points on "
        f"{b['test_images']} test images. Its balanced accuracy is {compare_words(b['balanced_accuracy'], o['balanced_accuracy'])} "
        f"({b['balanced_accuracy']:.3f} against {o['balanced_accuracy']:.3f}) and its macro-F1 "
        f"{compare_words(b['macro_f1'], o['macro_f1'])} ({b['macro_f1']:.3f} against {o['macro_f1']:.3f}). "
        "These are the numbers of the first round's split and seed; the statistical analysis below covers "
        "all rounds.</p>"
    )


def agreement_html(agreement: pd.DataFrame) -> str:
    first, second = agreement.index.name, agreement.columns.name
    only_first, only_second = int(agreement.loc["right", "wrong"]), int(agreement.loc["wrong", "right"])
    both_wrong = int(agreement.loc["wrong", "wrong"])
    return (
        f"<p>{escape(first)} classifies {count(only_first, 'test image')} correctly that {escape(second)} gets "
        f"wrong, and {escape(second)} {only_second} that {escape(first)} gets wrong; {count(both_wrong, 'image')} "
        f"{'defeats' if both_wrong == 1 else 'defeat'} both.</p>"
    )


def explanations_html(explanations) -> str:
    """What the explanation figures show, and the disagreements and confusions in words (`lib.explain.Explanations`)."""
    discordant = explanations.discordant
    by_model = discordant["right"].value_counts()
    models = list(explanations.maps)
    disagree = (f"The two models disagree on {count(len(discordant), 'test image')} of the first round "
                f"({'; '.join(f'{escape(m)} alone is right on {by_model.get(m, 0)}' for m in models)}): the "
                "discordant images McNemar's test counts." if len(discordant) else
                "The two models agree on every test image of the first round: no image is right for one and wrong "
                "for the other.")
    confused = explanations.most_confused
    worst = []
    for model in models:
        rows = confused[confused["model"] == model]
        if len(rows):
            top = rows.iloc[0]
            worst.append(f"{escape(model)} most often takes <i>{escape(str(top['true_label']))}</i> for "
                         f"<i>{escape(str(top['predicted_label']))}</i> ({count(int(top['count']), 'image')})")
        else:
            worst.append(f"{escape(model)} confuses no class with another")
    return (
        "<p>Grad-CAM (Selvaraju et al., 2017) shows where in a photo each model finds the evidence for the class it "
        "predicts: the last convolutional feature maps, weighted by how much that class's score rises with each. "
        f"{disagree} {'; '.join(worst)}.</p>"
    )


def most_confused_table(most_confused: pd.DataFrame, per_model: int = 5) -> pd.DataFrame:
    """Each model's ``per_model`` most-confused (true, predicted) pairs, readable column names."""
    top = most_confused.groupby("model", sort=False).head(per_model)
    return top.rename(columns={"true_label": "true class", "predicted_label": "predicted as", "count": "test images"})


def overfitting_verdict(gap: float, threshold: float = 5.0) -> str:
    """Words for the training minus validation accuracy at the kept epoch, in points."""
    if gap > threshold:
        return f"overfits: at the kept epoch its training accuracy exceeds its validation accuracy by {gap:.1f} points"
    if gap < 0:
        return f"does not overfit: at the kept epoch its validation accuracy is {-gap:.1f} points above its training accuracy"
    return f"shows little overfitting at the kept epoch (training minus validation accuracy: {gap:.1f} points)"


OVERFITTING_GAP = "train - val accuracy at kept epoch (points)"  # a row of `lib.compare.comparison_table`


def discussion_html(audit: dict, results: dict[str, ModelResults], first_round: pd.DataFrame, replication: bool,
                    rounds: int, overfit_threshold: float = 5.0) -> str:
    """Overfitting, the minority class and cost, in the round the results section shows (the first); the
    original study's score on its rare class only for the ``replication``."""
    small, small_n = smallest_class(audit)
    gaps = first_round.loc[OVERFITTING_GAP].astype(float).to_dict()
    parts = [f"{escape(name)} {overfitting_verdict(gap, overfit_threshold)}" for name, gap in gaps.items()]
    why = (" Validation accuracy can exceed training accuracy because only the training images are augmented."
           if min(gaps.values()) < 0 else "")
    support = next(iter(results.values())).metrics["per_class"][small]["support"]
    minority = ", ".join(
        f"{escape(r.name)} {r.metrics['per_class'][small]['f1']:.2f} (recall {r.metrics['per_class'][small]['recall']:.2f})"
        for r in results.values()
    )
    cost = "; ".join(
        f"{escape(r.name)} trained for {r.metrics['training_seconds']:.0f} s over "
        f"{count(sum(r.metrics['epochs_run'].values()), 'epoch')} and classifies an image in {1000 * r.metrics['inference_seconds_per_image']:.1f} ms"
        for r in results.values()
    )
    original = " (the original study scored 0.00 with both models)" if replication else ""
    in_test = f"{support} {'is' if support == 1 else 'are'} in the round's test split"
    over_rounds = ("which is why the statistical analysis gives them over every round" if rounds > 1 else
                   "and one round cannot show how much they vary: more rounds (evaluation.seeds) would")
    return (
        f"<p><b>Overfitting (first round).</b> {'; '.join(parts)}.{why}</p>"
        f"<p><b>The minority class (first round).</b> <i>{escape(small)}</i> has {count(small_n, 'image')}, of which "
        f"{in_test}. F1 on it: {minority}{original}. With so few test images, each one moves this class's recall "
        f"by {1 / max(support, 1):.2f}: these numbers are fragile, {over_rounds}.</p>"
        f"<p><b>Cost (first round).</b> {cost} on this machine.</p>"
    )


def conclusion_html(comparison: Comparison) -> str:
    """The finding, worded by the comparison's verdict (`lib.compare.verdict`): 'not significant' unless
    the rule says otherwise. When it says 'not significant' only because the two separate intervals
    overlap, while every round's test and the paired interval agree on the better model, it says so too.
    """
    summary, tests, difference = comparison.summary, comparison.mcnemar, comparison.difference
    significant = comparison.verdict["significant"]
    means = compared_models(summary).xs("macro-F1", level="metric")["mean"].sort_values(ascending=False)
    (best, best_f1), (other, other_f1) = list(means.items())[:2]
    rounds = int(summary["rounds"].iloc[0])
    finding = (
        f"{escape(best)} gives the better mean macro-F1 over {count(rounds, 'round')} ({best_f1:.3f} against "
        f"{other_f1:.3f}), and the difference is significant"
        if significant
        else f"{escape(best)} scores the higher mean macro-F1 over {count(rounds, 'round')} ({best_f1:.3f} against "
        f"{other_f1:.3f}), but the difference is not significant"
    )
    if not significant and comparison.verdict["paired_evidence_favours"] == best:
        row = difference.loc["macro-F1"]
        finding += (
            f" by this study's rule, because the two macro-F1 intervals overlap; McNemar's test (p at most "
            f"{tests['p_value'].astype(float).max():.3g} in {'every round' if rounds > 1 else 'its one round'}) and "
            "the paired interval of the "
            f"difference ({row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}], "
            f"{escape(row['second'])} minus {escape(row['first'])}) both favour {escape(best)}")
    return (
        f"<p>On this data, {finding}. Future work: more rounds (or k-fold cross-validation) so that the "
        "smallest class is tested on more images; more photographs of the rare products; and a test set "
        "photographed in other shops, which no near-duplicate grouping can replace.</p>"
    )


# --------------------------------------------------------------------------------------
# Statistical analysis
# --------------------------------------------------------------------------------------


def statistics_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows: metrics; columns: models; cells 'mean ± std [low, high]'."""
    cells = summary.apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f} [{r['low']:.3f}, {r['high']:.3f}]", axis=1)
    table = cells.unstack("model")
    return table.reindex(index=summary.index.get_level_values("metric").unique(),
                         columns=summary.index.get_level_values("model").unique()).rename_axis(index="metric", columns=None)


def difference_table(difference: pd.DataFrame) -> pd.DataFrame:
    """Rows: metrics; columns: the paired difference 'second − first' (`lib.compare.difference_across_rounds`)
    and its interval."""
    name = f"{difference['second'].iloc[0]} − {difference['first'].iloc[0]}"
    return difference[["difference", "low", "high"]].rename(
        columns={"difference": name, "low": "95 % low", "high": "95 % high"})


def difference_sentence(difference: pd.DataFrame, metric: str = "macro-F1") -> str:
    """The paired interval of the difference in words, and whether it excludes 0."""
    row = difference.loc[metric]
    excludes = row["low"] > 0 or row["high"] < 0
    return (
        f" The paired bootstrap interval of the difference in {metric} ({escape(row['second'])} minus "
        f"{escape(row['first'])}, both models scored on the same resampled test images, which two separate "
        f"intervals ignore) is {row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]; it "
        + ("excludes 0." if excludes else "includes 0.")
    )


def statistics_html(comparison: Comparison, scheme: str) -> str:
    """Rounds, intervals and McNemar's p-values in words; the verdict of `lib.compare.SIGNIFICANCE_RULE`,
    with the half of the rule that failed; then the paired interval of the difference."""
    summary, tests, verdict = comparison.summary, comparison.mcnemar, comparison.verdict
    rounds = int(summary["rounds"].iloc[0])
    spread = ("each round draws its own split and its own initialisation. Below, each metric is given as its mean "
              "over rounds ± the standard deviation between rounds" if rounds > 1 else
              "with one round there is no spread between rounds to give (± 0). Below, each metric is given as its "
              "value in that round")
    per_model = "; ".join(
        f"{escape(model)} {row['mean']:.3f} ± {row['std']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"
        for model, row in summary.xs("macro-F1", level="metric").iterrows()
    )
    p_values = ", ".join(f"{escape(str(name))}: p = {float(p):.3g}" for name, p in tests["p_value"].items())
    outcome = ("the difference between the models is significant at the 5 % level" if verdict["significant"]
               else f"the difference between the models is not significant at the 5 % level "
                    f"({not_significant_because(verdict)})")
    return (
        f"<p>The study ran {count(rounds, 'evaluation round')} ({SCHEME_NAMES[scheme]}); {spread}, with a 95 % "
        "percentile bootstrap interval of the mean (scipy; each round's test images resampled independently). "
        f"Macro-F1: {per_model}. McNemar's exact test on {'each round' if rounds > 1 else 'the round'}'s paired test "
        f"predictions: {p_values}. By this study's rule, {verdict['rule']}: {outcome}."
        f"{difference_sentence(comparison.difference)}{probe_row_sentence(summary)}</p>"
    )


def probe_row_sentence(summary: pd.DataFrame) -> str:
    """What the linear probe's row of the statistics is, when the summary has one."""
    if PROBE_NAME not in summary.index.get_level_values("model"):
        return ""
    return (f" The linear probe (“{escape(PROBE_NAME)}”: a logistic regression on MobileNetV2's frozen ImageNet "
            "features, the floor that fine-tuning should clear) has a row of its own, with its interval; it takes "
            "no part in McNemar's tests, the paired interval or the significance rule, which compare the two models.")


def not_significant_because(verdict: dict) -> str:
    """Which half of the significance rule failed, in words (from `lib.compare.verdict`)."""
    reasons = []
    if above := verdict["rounds_above_alpha"]:
        reasons.append(f"McNemar's p is above 0.05 in {', '.join(escape(name) for name in above)}")
    if verdict["intervals_overlap"]:
        if not above:
            reasons.append("McNemar's test finds the two models' errors different in every round, but the "
                           "macro-F1 intervals overlap; the test counts images, most of them from the large "
                           "classes, while macro-F1 weighs the smallest class as much as the largest")
        else:
            reasons.append("the macro-F1 intervals overlap")
    return "; ".join(reasons)


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


METRIC_NAMES = {"macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy"}
SCHEME_NAMES = {"holdout": "repeated stratified hold-out", "kfold": "stratified k-fold cross-validation"}


NUMBER_WORDS = {1: "One", 2: "Two", 3: "Three"}


def method_phrase(method: str, tau_grid: list[float], replication: bool = False) -> str:
    """A method in words; for logit adjustment, whether its strength was fixed in advance or tuned; for the
    ``replication``, which method the original study used."""
    title = METHODS[method].title + (", the original study's choice" if replication and method == "class_weight" else "")
    if not METHODS[method].adjusts_logits:
        return title
    if len(tau_grid) == 1:
        return (f"{title} (strength tau = {tau_grid[0]:g}, fixed in advance, so that "
                "no method fits a parameter to the validation images that rank the methods)")
    return (f"{title} with its strength tau tuned on validation (which favours it "
            "in the comparison: it alone is fitted to the images that rank the methods)")


def methods_html(methods: pd.DataFrame, minority_params, replication: bool = False) -> str:
    """Which method each model's headline results use, and why (validation only), and how many
    rare validation images the choice rests on."""
    if methods.empty:
        return "<p>One minority-class method was configured, so none was compared.</p>"
    selection_metric = minority_params.selection_metric
    chosen = methods[methods["chosen"] & (methods["split"] == "val")]
    minority = escape(str(methods["minority_class"].iloc[0]))
    parts = "; ".join(
        f"{escape(row['model'])}: {escape(row['method'])} (validation {METRIC_NAMES[selection_metric]} "
        f"{row[selection_metric]:.3f}, minority F1 {row['minority_f1']:.2f})"
        for _, row in chosen.iterrows()
    )
    compared = list(dict.fromkeys(methods["method"]))
    described = ", ".join(escape(method_phrase(m, minority_params.tau_grid, replication)) for m in compared)
    if len(compared) == 1:
        return (f"<p>One way to keep the rare class <i>{minority}</i> from being ignored was configured, "
                f"{described}, so no method was compared; its first-round validation scores: {parts}.</p>")
    count = NUMBER_WORDS.get(len(compared), str(len(compared)))
    return (
        f"<p>{count} ways to keep the rare class <i>{minority}</i> from being ignored were trained in the first "
        f"round: {described}. "
        f"The method for all headline results is the one with the best validation score (ties broken by the "
        f"lower validation log-loss), chosen without looking at the test split: {parts}. The test rows are "
        f"reported for the record only.{evidence_sentence(methods, minority)}</p>"
    )


def evidence_sentence(methods: pd.DataFrame, minority: str) -> str:
    """How many rare validation images the choice rests on."""
    images = int(methods.loc[methods["split"] == "val", "minority_images"].max())
    return (f" The choice rests on {count(images, 'validation image')} of <i>{minority}</i>: methods that differ by one "
            "such image cannot be told apart, so it is a pre-set rule rather than evidence that one method is "
            "better.")


def calibration_html(errors: dict[str, float]) -> str:
    ece = ", ".join(f"{escape(name)} {value:.3f}" for name, value in errors.items())
    return (
        "<p>Calibration: how far a model's confidence can be trusted. The expected calibration error (ECE, ten "
        f"equal-width confidence bins, test predictions of all rounds pooled) is {ece}; 0 means that among "
        "images predicted with confidence c, a fraction c is right.</p>"
    )


def limitations_html(audit: dict, comparison: Comparison, grouped: bool) -> str:
    """Limitations written from the run's numbers: how thin the evidence on the smallest class is, what the
    rounds are (and are not), and what near-duplicate grouping (``grouped``: on) leaves."""
    small, small_n = smallest_class(audit)
    per_round = compared_models(comparison.per_round)
    supports = sorted(set(comparison.support[small].astype(int)))
    tested = f"{' or '.join(str(n) for n in supports)} {'image' if supports == [1] else 'images'}"
    rounds = per_round["round"].nunique()
    f1 = per_round[f"F1: {small}"]
    spread = (f"Over {count(rounds, 'round')} its F1 ranges from {f1.min():.2f} to {f1.max():.2f}. The rounds share "
              f"the same {audit['images_usable']:,} photographs, so they are not independent samples"
              if rounds > 1 else f"In the one round its F1 is {f1.iloc[0]:.2f}; one round cannot say how much that "
              "varies with the split")
    grouping = ("Near-duplicate grouping depends on two thresholds; photographs of one product taken in different "
                "sessions can still be more alike than photographs of different products." if grouped else
                "Near-duplicate grouping was switched off, so a test image may have a near-twin in training (the "
                "data section counts them), which flatters both models.")
    return (
        f"<p><b>Limitations.</b> The smallest class, <i>{escape(small)}</i>, has {count(small_n, 'image')}, so "
        f"{'the round tests' if rounds == 1 else 'each round tests'} it on only {tested}: one image more or less "
        f"right moves its recall by {1 / max(min(supports), 1):.2f}. {spread}, and the bootstrap intervals describe "
        f"the test images of this dataset, not other shops or cameras. {grouping}</p>"
    )


def params_yaml(params) -> str:
    return yaml.safe_dump(params.to_dict(), sort_keys=False, allow_unicode=True)


def key_value_table(values: dict, key: str, value: str) -> pd.DataFrame:
    return pd.DataFrame({value: [str(v) for v in values.values()]}, index=pd.Index(list(values), name=key))


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _report_only(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with its code hidden and only displayed results kept (no logs, no warnings)."""
    notebook = nbformat.from_dict(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
    notebook.cells = [c for c in notebook.cells if c.cell_type == "markdown" or c.outputs]
    return notebook


def render_html(executed_notebook: Path, title: str) -> str:
    """The executed report notebook as one standalone HTML page, without any code."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(_report_only(nbformat.read(executed_notebook, as_version=4)))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE.read_text()}</style></head><body><main>{body}</main></body></html>\n"
    )


def render_pdf(html: str, pdf_path: Path) -> int:
    """The HTML page printed to PDF by WeasyPrint (A4, page numbers; see report.css); returns the page count."""
    from weasyprint import HTML

    document = HTML(string=html).render()
    document.write_pdf(pdf_path)
    return len(document.pages)


def render(executed_notebook: Path, html_path: Path, pdf_path: Path, title: str) -> int | None:
    """Write the report as HTML and PDF; returns the PDF's page count.

    Where WeasyPrint or the system's Pango it loads is missing (a GPU machine with a bare image,
    say), the HTML alone is written, a note says why, and None is returned; a PDF of an earlier
    run is removed, so that the report's HTML and PDF always come from one run.
    """
    html = render_html(executed_notebook, title)
    html_path.write_text(html, encoding="utf-8")
    try:
        import weasyprint  # noqa: F401 - loads Pango through cffi: OSError where the system lacks it
    except (ImportError, OSError) as error:
        pdf_path.unlink(missing_ok=True)
        print(f"note: no PDF this time, the HTML report is complete: WeasyPrint cannot print here "
              f"({type(error).__name__}: {error}); tools/setup_env.sh installs what it needs", flush=True)
        return None
    return render_pdf(html, pdf_path)


def steps_table(steps: dict) -> pd.DataFrame:
    """Wall time and peak memory of each step, and whether it was reused from the previous run (inputs unchanged)."""
    return pd.DataFrame(
        {
            "wall time (s)": [entry.get("seconds") for entry in steps.values()],
            "peak memory (GiB)": [entry.get("peak_rss_gib") for entry in steps.values()],
            "reused": ["yes, inputs unchanged" if entry.get("reused") else "no, run" for entry in steps.values()],
        },
        index=pd.Index(list(steps), name="step"),
    )
