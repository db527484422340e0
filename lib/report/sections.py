"""The report's sentences, generated from the run's numbers: one ``*_html`` function per section's text.

The report notebook (``notebooks/05_report.ipynb``) calls the ``*_html`` functions here,
each of which turns the artefacts of the run (the audit's summary, the models' metrics, and
the comparison's tables and verdict, `lib.analysis.compare.Comparison`) into a section's text; no
statistic is computed here and nothing about results is typed by hand, so another dataset gets a correct
report. Every value that comes from the data (class names, file names) is HTML-escaped: a class folder
called ``<b>x</b>`` shows as that text. The figures are `lib.report.plots`', the tables
`lib.report.tables`', the data section's words `lib.report.data_prose`'; `lib.report.render` turns the
executed notebook into HTML without any code, and the HTML into a PDF.
"""

from __future__ import annotations

import pandas as pd

from lib.analysis.calibration import BINS
from lib.analysis.compare import OVERFITTING_GAP, Comparison, ModelResults, compared_models
from lib.analysis.probe_check import abstract_words, below_probe_warning, no_warning_sentence
from lib.analysis.stats import percent
from lib.core.minority import METHODS, METRIC_WORDS
from lib.core.study import PROBE_NAME
from lib.report.data_prose import class_sizes_clause, is_balanced, is_imbalanced, smallest_class
from lib.report.document import compare_words, count, escape, pct

# --------------------------------------------------------------------------------------
# Words that follow the numbers
# --------------------------------------------------------------------------------------


def _ranked(results: dict[str, ModelResults], key: str = "macro_f1") -> list[ModelResults]:
    return sorted(results.values(), key=lambda r: r.metrics[key], reverse=True)


def abstract_html(audit: dict, comparison: Comparison, replication: bool, grouped: bool, subject: str) -> str:
    """The abstract: what the images show (``subject``), the data, rounds, both models' mean macro-F1 with
    intervals, the smallest class's F1 when the classes are imbalanced; the original study's score only for the
    ``replication``; what ``grouped`` (near-duplicate groups kept whole) did to the splits; the probe check only
    when it warns."""
    small, _ = smallest_class(audit)
    summary = compared_models(comparison.summary)
    f1 = summary.xs("macro-F1", level="metric").sort_values("mean", ascending=False)
    (best, b), (other, o) = list(f1.iterrows())[:2]
    trainable = comparison.first_round.loc["trainable parameters"].astype(int)
    leaks = sum(row["test images with a training near-duplicate (used)"] for row in audit["leaks_by_round"])
    rounds = int(b["rounds"])
    over = (f"Over {count(rounds, 'evaluation round')}, each with its own split and seed," if rounds > 1
            else "In one evaluation round,")
    original = " (the original study: 0.00 for both)" if replication else ""
    rare = ""
    if is_imbalanced(audit):
        f1_small = summary.xs(f"F1: {small}", level="metric")["mean"]
        rare = (f" On the smallest class the {'mean ' if rounds > 1 else ''}F1 is {f1_small[best]:.2f} for "
                f"{escape(best)} and {f1_small[other]:.2f} for {escape(other)}{original}.")
    remaining = f"{count(leaks, 'test image')} with a near-duplicate in training {'remains' if leaks == 1 else 'remain'}"
    splits = (f"Splits keep near-duplicate images together ({remaining})" if grouped
              else f"Near-duplicate grouping was switched off ({remaining})")
    return (
        "<p>We compare a convolutional network trained from scratch with MobileNetV2 transfer learning for "
        f"classifying {escape(subject)}, on {count(audit['images_usable'], 'image')} in "
        f"{count(len(audit['classes']), 'class', 'classes')} {class_sizes_clause(audit)}. {over} {escape(best)} "
        f"reaches a {'mean ' if rounds > 1 else ''}macro-F1 of {b['mean']:.3f} ({percent(comparison.verdict['confidence'])} interval "
        f"{b['low']:.3f}–{b['high']:.3f}) against {o['mean']:.3f} ({o['low']:.3f}–{o['high']:.3f}) for "
        f"{escape(other)}, while training {trainable[best]:,} parameters against {trainable[other]:,}.{rare} "
        f"{splits}, and the test split never takes part in any choice.{probe_abstract_sentence(comparison.probe_check)}</p>"
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


OVERFITTING_THRESHOLD = 5.0  # points of training minus validation accuracy above which a model is said to overfit


def overfitting_verdict(gap: float, threshold: float = OVERFITTING_THRESHOLD) -> str:
    """Words for the training minus validation accuracy at the kept epoch, in points."""
    if gap > threshold:
        return f"overfits: at the kept epoch its training accuracy exceeds its validation accuracy by {gap:.1f} points"
    if gap < 0:
        return f"does not overfit: at the kept epoch its validation accuracy is {-gap:.1f} points above its training accuracy"
    return f"shows little overfitting at the kept epoch (training minus validation accuracy: {gap:.1f} points)"


def discussion_html(audit: dict, results: dict[str, ModelResults], first_round: pd.DataFrame, replication: bool,
                    rounds: int, overfit_threshold: float = OVERFITTING_THRESHOLD) -> str:
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
    heading, which = "The minority class", f"<i>{escape(small)}</i> has {count(small_n, 'image')}, of which {in_test}"
    if is_balanced(audit):
        heading, which = "One class", (f"The classes are balanced ({count(small_n, 'image')} each); <i>{escape(small)}"
                                       f"</i>, for one, has {support} in the round's test split")
    elif not is_imbalanced(audit):
        heading = "The smallest class"
    over_rounds = ("which is why the statistical analysis gives them over every round" if rounds > 1 else
                   "and one round cannot show how much they vary: more rounds (evaluation.seeds) would")
    return (
        f"<p><b>Overfitting (first round).</b> {'; '.join(parts)}.{why}</p>"
        f"<p><b>{heading} (first round).</b> {which}. F1 on it: {minority}{original}. With so few test images, each one moves this class's recall "
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
        f"<p>On this data, {finding}. Future work: more rounds (or k-fold cross-validation) so that every "
        "class is tested on more images; more images of the smallest classes; and a test set collected elsewhere "
        "(other places, other cameras), which no near-duplicate grouping can replace.</p>"
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
    """Rounds, intervals and McNemar's p-values in words; the verdict of `lib.analysis.compare.significance_rule`,
    with the half of the rule that failed; then the paired interval of the difference. The levels are those the
    verdict records (``evaluation.confidence``, ``evaluation.alpha``)."""
    summary, tests, verdict = comparison.summary, comparison.mcnemar, comparison.verdict
    level = f"at the {percent(verdict['alpha'])} level"
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
    outcome = (f"the difference between the models is significant {level}" if verdict["significant"]
               else f"the difference between the models is not significant {level} "
                    f"({not_significant_because(verdict)})")
    return (
        f"<p>The study ran {count(rounds, 'evaluation round')} ({SCHEME_NAMES[scheme]}); {spread}, with a "
        f"{percent(verdict['confidence'])} percentile bootstrap interval of the mean (scipy; each round's test images resampled independently). "
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
        reasons.append(f"McNemar's p is above {verdict['alpha']:g} in {', '.join(escape(name) for name in above)}")
    if verdict["intervals_overlap"]:
        if not above:
            reasons.append("McNemar's test finds the two models' errors different in every round, but the "
                           "macro-F1 intervals overlap; the test counts images, most of them from the large "
                           "classes, while macro-F1 weighs the smallest class as much as the largest")
        else:
            reasons.append("the macro-F1 intervals overlap")
    return "; ".join(reasons)


SCHEME_NAMES = {"holdout": "repeated stratified hold-out", "kfold": "stratified k-fold cross-validation"}


NUMBER_WORDS = {1: "One", 2: "Two", 3: "Three", 4: "Four"}


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


def methods_html(methods: pd.DataFrame, minority_params, replication: bool = False, balanced: bool = False) -> str:
    """Which method each model's headline results use, and why (validation only), and how many
    rare validation images the choice rests on; with ``balanced`` classes, that no class is rare here."""
    if methods.empty:
        return "<p>One minority-class method was configured, so none was compared.</p>"
    selection_metric = minority_params.selection_metric
    chosen = methods[methods["chosen"] & (methods["split"] == "val")]
    minority = escape(str(methods["minority_class"].iloc[0]))
    rare = (f"a rare class (none here: the classes are balanced, <i>{minority}</i> is the first of them)" if balanced
            else f"the rare class <i>{minority}</i>")
    parts = "; ".join(
        f"{escape(row['model'])}: {escape(row['method'])} (validation {METRIC_WORDS[selection_metric]} "
        f"{row[selection_metric]:.3f}, minority F1 {row['minority_f1']:.2f})"
        for _, row in chosen.iterrows()
    )
    compared = list(dict.fromkeys(methods["method"]))
    described = ", ".join(escape(method_phrase(m, minority_params.tau_grid, replication)) for m in compared)
    if len(compared) == 1:
        return (f"<p>One way to keep {rare} from being ignored was configured, "
                f"{described}, so no method was compared; its first-round validation scores: {parts}.</p>")
    count = NUMBER_WORDS.get(len(compared), str(len(compared)))
    return (
        f"<p>{count} ways to keep {rare} from being ignored were trained in the first "
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
        "<p>Calibration: how far a model's confidence can be trusted. The expected calibration error (ECE, "
        f"{BINS} equal-width confidence bins, test predictions of all rounds pooled) is {ece}; 0 means that among "
        "images predicted with confidence c, a fraction c is right.</p>"
    )


def limitations_html(audit: dict, comparison: Comparison, grouped: bool) -> str:
    """Limitations written from the run's numbers: how thin the evidence on the smallest class is, what the
    rounds are (and are not), and what near-duplicate grouping (``grouped``: on) leaves."""
    small, small_n = smallest_class(audit)
    who = (f"Every class has {count(small_n, 'image')}; <i>{escape(small)}</i>, for one, is small" if is_balanced(audit)
           else f"The smallest class, <i>{escape(small)}</i>, has {count(small_n, 'image')}")
    per_round = compared_models(comparison.per_round)
    supports = sorted(set(comparison.support[small].astype(int)))
    tested = f"{' or '.join(str(n) for n in supports)} {'image' if supports == [1] else 'images'}"
    rounds = per_round["round"].nunique()
    f1 = per_round[f"F1: {small}"]
    spread = (f"Over {count(rounds, 'round')} its F1 ranges from {f1.min():.2f} to {f1.max():.2f}. The rounds share "
              f"the same {count(audit['images_usable'], 'image')}, so they are not independent samples"
              if rounds > 1 else f"In the one round its F1 is {f1.iloc[0]:.2f}; one round cannot say how much that "
              "varies with the split")
    grouping = ("Near-duplicate grouping depends on two thresholds; pictures of one object taken in different "
                "sessions can still be more alike than pictures of different objects." if grouped else
                "Near-duplicate grouping was switched off, so a test image may have a near-twin in training (the "
                "data section counts them), which flatters both models.")
    return (
        f"<p><b>Limitations.</b> {who}, so {'the round tests' if rounds == 1 else 'each round tests'} it on only "
        f"{tested}: one image more or less right moves its recall by {1 / max(min(supports), 1):.2f}. {spread}, and "
        f"the bootstrap intervals describe the test images of this dataset, not images taken elsewhere or with other "
        f"cameras. {grouping}</p>"
    )

