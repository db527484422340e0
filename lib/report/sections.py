"""The academic report: numbered figures and tables, sentences generated from the run's numbers, rendering.

The report notebook (``notebooks/05_report.ipynb``) calls the ``*_html`` functions here,
each of which turns the artefacts of the run (the audit's summary, the models' metrics, and
the comparison's tables and verdict, `lib.analysis.compare.Comparison`) into a section's text; no
statistic is computed here and nothing about results is typed by hand, so another dataset gets a correct report. Every value that
comes from the data (class names, file names) is HTML-escaped: a class folder called
``<b>x</b>`` shows as that text. `render` then turns the executed notebook into HTML
without any code, and the HTML into a PDF with WeasyPrint.
"""

from __future__ import annotations

import pandas as pd

from lib.analysis.compare import Comparison, ModelResults, compared_models
from lib.analysis.probe_check import abstract_words, below_probe_warning, no_warning_sentence
from lib.core.paths import PROBE_NAME
from lib.report.document import compare_words, count, escape, pct
from lib.training.minority import METHODS

# --------------------------------------------------------------------------------------
# Words that follow the numbers
# --------------------------------------------------------------------------------------


# The replication's data: the original study's five classes, its 14-image class, from Grocery Store
# (params/default.yaml). Sentences about the original study appear only in a report on this data.
REPLICATION_DATA = {"source": "grocery_store",
                    "grocery_store": {"label_level": "coarse", "classes": ["Apple", "Juice", "Yoghurt", "Milk", "Oat-Milk"],
                                      "max_per_class": {"Oat-Milk": 14}}}


def is_replication(params) -> bool:
    """Whether the run studies the replication's data (whatever its other params)."""
    data = params.to_dict()["data"]
    return data["source"] == REPLICATION_DATA["source"] and data["grocery_store"] == REPLICATION_DATA["grocery_store"]


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
    validation beyond the paired interval (`lib.analysis.probe_check`), else nothing."""
    words = abstract_words(checks)
    return f" <b>{escape(words)}</b>" if words else ""


def probe_html(checks: pd.DataFrame, params) -> str:
    """The sanity floor of transfer learning in words: what the linear probe is, and either the warning of
    `lib.analysis.probe_check.below_probe_warning` (a round's fine-tuned model below its probe on validation,
    beyond the paired interval) or how the two compare."""
    what = (f"<p>A sanity floor for transfer learning: the linear probe (“{escape(PROBE_NAME)}” in the tables) is "
            "a logistic regression (scikit-learn, standardised features, no parameter tuned) on the pooled output of "
            "MobileNetV2's frozen ImageNet base for the un-augmented training images, trained in every round with "
            "the round's minority-class method. Fine-tuning starts from these features and should score at least "
            "as well. ")
    warning = below_probe_warning(checks, params) if len(checks) else None
    if warning is None:
        return what + escape(no_warning_sentence(checks)) + "</p>"
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
    """What the explanation figures show, and the disagreements and confusions in words (`lib.analysis.explain.Explanations`)."""
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


def overfitting_verdict(gap: float, threshold: float = 5.0) -> str:
    """Words for the training minus validation accuracy at the kept epoch, in points."""
    if gap > threshold:
        return f"overfits: at the kept epoch its training accuracy exceeds its validation accuracy by {gap:.1f} points"
    if gap < 0:
        return f"does not overfit: at the kept epoch its validation accuracy is {-gap:.1f} points above its training accuracy"
    return f"shows little overfitting at the kept epoch (training minus validation accuracy: {gap:.1f} points)"


OVERFITTING_GAP = "train - val accuracy at kept epoch (points)"  # a row of `lib.analysis.compare.comparison_table`


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
    """The finding, worded by the comparison's verdict (`lib.analysis.compare.verdict`): 'not significant' unless
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
    """Rounds, intervals and McNemar's p-values in words; the verdict of `lib.analysis.compare.SIGNIFICANCE_RULE`,
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
    """Which half of the significance rule failed, in words (from `lib.analysis.compare.verdict`)."""
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

