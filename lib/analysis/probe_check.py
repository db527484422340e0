"""The fine-tuned MobileNetV2 against its linear probe on validation: the check, its margin from the data, its words.

When the fine-tuned model scores below its linear probe (`lib.training.probe`) on validation (the
study's selection metric, ``minority.selection_metric``), fine-tuning may have made the pretrained
features worse than a linear read-out of them: something in the training (augmentation that the
frozen features cannot follow, the learning rate, an input size far from ImageNet's) costs more
than fine-tuning gains, and a comparison with the CNN built on that model says more about the
training than about transfer learning.

A validation split is small, though, and one image of a rare class moves macro-F1 by several
points. So the two are compared as a paired difference on the same validation images, with the
paired bootstrap interval the comparison already uses for the two models
(`lib.analysis.stats.paired_difference_bootstrap`), and the warning fires only when the probe is
better beyond that interval (`probe_better_beyond_noise`); otherwise the words say that the two are
within noise. The MobileNetV2 notebook checks its own round, the comparison every round (it writes
``comparison/probe_check.csv``), and the report words what the comparison wrote.
"""

from __future__ import annotations

import math

import pandas as pd

from lib.analysis.stats import HEADLINE_KEYS, paired_difference_bootstrap, percent, round_metrics
from lib.core.minority import METRIC_WORDS
from lib.core.paths import RoundPaths
from lib.core.study import PROBE_MODEL
from lib.data.augmentation import build_augmentation

COLUMNS = ["metric", "images", "fine_tuned", "probe", "probe_minus_fine_tuned", "low", "high", "confidence",
           "below_probe"]


def read_validation(paths: RoundPaths) -> pd.DataFrame:
    """The fine-tuned model's and the probe's predicted class of each validation image in one round
    (`lib.training.probe.validation_table`); a missing file names the notebook that writes it."""
    file = paths.model(PROBE_MODEL.name).probe_validation
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: run the {PROBE_MODEL.title} notebook first")
    return pd.read_csv(file, keep_default_na=False)


def round_check(metric: str, class_names: list[str], validation: pd.DataFrame, seed: int, confidence: float,
                n_resamples: int = 2000) -> dict:
    """One round: both models' validation ``metric`` (a key of `METRIC_WORDS`), the probe's lead (probe minus
    fine-tuned) with its paired bootstrap interval over the validation images (at ``confidence``, as the
    comparison's other intervals: ``evaluation.confidence``), and the rule's answer."""
    if metric not in METRIC_WORDS:
        raise ValueError(f"the probe check compares {sorted(METRIC_WORDS)}, not {metric!r}")
    index = {name: i for i, name in enumerate(class_names)}
    true, fine_tuned, probe = (validation[column].map(index).to_numpy() for column in ("true_label", "fine_tuned", "probe"))
    at = HEADLINE_KEYS.index(metric)
    scores = [float(round_metrics(true, predicted, len(class_names))[at]) for predicted in (fine_tuned, probe)]
    if (fine_tuned == probe).all():  # no discordant image: the difference is 0 in every resample
        low = high = 0.0
    else:
        lows, highs = paired_difference_bootstrap([(true, fine_tuned, probe)], len(class_names), confidence,
                                                  n_resamples, seed)
        low, high = float(lows[at]), float(highs[at])
    return {"metric": metric, "images": len(validation), "fine_tuned": scores[0], "probe": scores[1],
            "probe_minus_fine_tuned": scores[1] - scores[0], "low": low, "high": high, "confidence": confidence,
            "below_probe": probe_better_beyond_noise(low)}


def probe_better_beyond_noise(low: float) -> bool:
    """The rule: the paired interval of the probe's lead over the fine-tuned model lies wholly above 0. A lead
    of one or two images is inside the interval, since resamples without those images give a lead of 0."""
    return not math.isnan(low) and low > 0


def check_table(rounds: dict[str, tuple[dict, pd.DataFrame]], seed: int, confidence: float,
                n_resamples: int = 2000) -> pd.DataFrame:
    """Per round (``{round: (probe metrics, validation predictions)}``, `lib.training.probe.ProbeResult`'s
    ``metrics`` and ``validation``): `round_check`, seeded by ``seed``, at ``confidence``. Columns: `COLUMNS`."""
    rows = {name: round_check(metrics["validation"]["metric"], metrics["class_names"], validation, seed, confidence,
                              n_resamples)
            for name, (metrics, validation) in rounds.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS).rename_axis("round")


# --------------------------------------------------------------------------------------
# Its words
# --------------------------------------------------------------------------------------

IMAGENET_SIZE = 224  # the input size MobileNetV2's ImageNet weights were trained at


def likely_causes(params) -> str:
    """The usual suspects, with this run's values: augmentation, learning rates, input size."""

    mobilenet, size = params.mobilenet_v2, params.data.image_size
    augmented = build_augmentation(params.augmentation, params.seed) is not None
    augmentation = ("augmentation that the frozen features cannot follow (this run augments every training "
                    "image, see the augmentation parameters; strong rotations, shears and zooms hurt most on "
                    "small images: try weaker augmentation or none)" if augmented else
                    "augmentation (none in this run, so not this one)")

    def epochs(n: int) -> str:
        return f"{n} epoch" if n == 1 else f"{n} epochs"

    learning_rate = (f"the learning rates (head {mobilenet.head.learning_rate:g} for at most "
                     f"{epochs(mobilenet.head.epochs)}, fine-tuning {mobilenet.fine_tune.learning_rate:g} for at "
                     f"most {epochs(mobilenet.fine_tune.epochs)}: too high erases the pretrained features, too low "
                     "or too few epochs leaves the new head untrained)")
    far = "far from" if min(size) < IMAGENET_SIZE / 2 else "compared with"
    input_size = (f"the input size ({size[0]} × {size[1]} px, {far} the {IMAGENET_SIZE} × {IMAGENET_SIZE} px "
                  "the ImageNet weights were trained at)")
    return f"{augmentation}; {learning_rate}; {input_size}"


def metric_words(checks: pd.DataFrame) -> str:
    metric = str(checks["metric"].iloc[0])
    return METRIC_WORDS.get(metric, metric)


def scores_words(checks: pd.DataFrame) -> str:
    """Each round's scores: 'seed-43: 0.948 against 0.986, probe − fine-tuned +0.038 [−0.010, +0.095] on 263 images'."""
    return "; ".join(f"{name}: {row['fine_tuned']:.3f} against {row['probe']:.3f}, probe − fine-tuned "
                     f"{row['probe_minus_fine_tuned']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] on "
                     f"{row['images']:,} {'image' if row['images'] == 1 else 'images'}"
                     for name, row in checks.iterrows())


def rounds_words(n: int, of: int) -> str:
    """Which rounds, by their count: 'in the round', 'in every round', 'in 1 of 3 rounds'."""
    if of == 1:
        return "in the round"
    return "in every round" if n == of else f"in {n} of {of} rounds"


def interval_words(checks: pd.DataFrame) -> str:
    """The interval the check reads, at the level it was computed (``evaluation.confidence``)."""
    return (f"the paired {percent(float(checks['confidence'].iloc[0]))} bootstrap interval of the difference on the "
            "same validation images")


def below_probe_warning(checks: pd.DataFrame, params) -> str | None:
    """The warning when any round's fine-tuned MobileNetV2 scores below its linear probe on validation beyond the
    paired interval (``checks``: `check_table`), in plain words with the likely causes; None when none does."""
    below = checks[checks["below_probe"].astype(bool)] if len(checks) else checks
    if below.empty:
        return None
    return (
        f"Warning: the fine-tuned MobileNetV2 scores below a linear probe on its own frozen ImageNet features "
        f"on the validation split {rounds_words(len(below), len(checks))}, beyond {interval_words(checks)} (validation "
        f"{metric_words(checks)}, fine-tuned against probe: {scores_words(below)}). Trained as configured, "
        "MobileNetV2 does worse than a logistic regression on the frozen features it starts from, so its scores "
        "here say more about its training than about transfer learning, and its comparison with the custom CNN "
        f"should not be read as a verdict on transfer learning. Likely causes: {likely_causes(params)}."
    )


def no_warning_sentence(checks: pd.DataFrame) -> str:
    """What the check found when it does not warn (``checks``: `check_table`): in which rounds the fine-tuned model
    is within noise of its probe (the interval includes 0) and in which above it beyond the interval, with the numbers."""
    if checks.empty:
        return "No linear probe was scored."
    above = int((checks["high"].astype(float) < 0).sum())
    found = [f"above the probe beyond that interval {rounds_words(above, len(checks))}"] if above else []
    if above < len(checks):
        found.append(f"within noise of {'it' if above else 'the probe'} {rounds_words(len(checks) - above, len(checks))}")
    return (f"On the validation split, the fine-tuned MobileNetV2 is compared with a linear probe on its own frozen "
            f"ImageNet features by {interval_words(checks)}: it is {' and '.join(found)} (validation {metric_words(checks)}, "
            f"fine-tuned against probe: {scores_words(checks)}).")


def abstract_words(checks: pd.DataFrame) -> str:
    """The probe check in the abstract: its size and in how many rounds, only when it warns; else nothing."""
    below = checks[checks["below_probe"].astype(bool)] if len(checks) else checks
    if below.empty:
        return ""
    which = "in its one round" if len(checks) == 1 else rounds_words(len(below), len(checks))
    size = "; ".join(f"{row['fine_tuned']:.3f} against {row['probe']:.3f}" + (f" in {name}" if len(checks) > 1 else "")
                     + f", a gap of {row['probe_minus_fine_tuned']:.3f} with interval {row['low']:.3f}–{row['high']:.3f}"
                     for name, row in below.iterrows())
    those = "" if len(below) == len(checks) else (" in that round" if len(below) == 1 else " in those rounds")
    return (f"{which[0].upper()}{which[1:]}, the fine-tuned MobileNetV2 scored below a linear probe on its own "
            f"frozen ImageNet features on validation, beyond the paired interval (validation "
            f"{metric_words(checks)} {size}): its comparison with the CNN{those} reflects how it was trained here, "
            "not what transfer learning can do (see the results).")
