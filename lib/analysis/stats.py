"""Statistics for claims about the models: confidence intervals and a paired test.

- `mcnemar_exact`: McNemar's exact test (statsmodels) of two models on the same images:
  do they err on different images more often than chance allows?
- `round_metrics` and `rounds_bootstrap`: accuracy, balanced accuracy, macro-F1 and each
  class's F1 averaged over evaluation rounds (or of one round), with a percentile bootstrap
  interval (scipy) that resamples each round's test images, pairs kept together,
  independently of the other rounds.
- `paired_difference_bootstrap`: the same interval for the difference between two models
  scored on the same resampled images, which is narrower than comparing two separate
  intervals because both models see the same easy and hard images in every resample.

The levels (``evaluation.confidence`` of every interval, ``evaluation.alpha`` of the test) are the params';
`percent` writes one in words.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap
from statsmodels.stats.contingency_tables import mcnemar


def percent(level: float) -> str:
    """A level in words: 0.9 -> "90 %", 0.975 -> "97.5 %"."""
    return f"{100 * level:g} %"


def mcnemar_exact(correct_a, correct_b) -> dict:
    """McNemar's exact test on paired correctness (booleans per image, same order for both models).

    Returns the discordant counts (``only_a``: images only model A gets right; ``only_b``)
    and the two-sided exact p-value.
    """
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("mcnemar_exact needs the two models' results on the same images")
    table = [
        [int(np.sum(correct_a & correct_b)), int(np.sum(correct_a & ~correct_b))],
        [int(np.sum(~correct_a & correct_b)), int(np.sum(~correct_a & ~correct_b))],
    ]
    result = mcnemar(table, exact=True)
    return {"only_a": table[0][1], "only_b": table[1][0], "p_value": float(result.pvalue)}


HEADLINE_KEYS = ("accuracy", "balanced_accuracy", "macro_f1")  # the first entries of `round_metrics`, in order


def round_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[accuracy, balanced accuracy, macro-F1, F1 of class 0, ..., F1 of class n-1] from integer labels.

    As scikit-learn computes them: balanced accuracy averages the recall of the classes
    present in ``y_true``; a class's F1 is 0 when it has no true positive (including when it
    neither occurs nor is predicted); macro-F1 averages all ``n_classes`` F1 scores.
    """
    confusion = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    hits, actual, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    present = actual > 0
    recall = hits[present] / actual[present]
    f1 = np.divide(2 * hits, actual + predicted, out=np.zeros(n_classes), where=(actual + predicted) > 0)
    return np.concatenate([[hits.sum() / len(y_true), recall.mean(), f1.mean()], f1])


def rounds_bootstrap(
    rounds: list[tuple[np.ndarray, np.ndarray]], n_classes: int, confidence: float,
    n_resamples: int = 2000, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the round-averaged `round_metrics`, each round's (true, predicted) test labels resampled
    with replacement independently of the others. Returns (low, high) arrays."""
    if not rounds or any(len(t) != len(p) or len(t) < 2 for t, p in rounds):
        raise ValueError("rounds_bootstrap needs, per round, two equally long label arrays of at least 2 images")
    return _rounds_interval(
        [len(t) for t, _ in rounds],
        lambda r, i: round_metrics(rounds[r][0][i], rounds[r][1][i], n_classes),
        confidence, n_resamples, seed,
    )


def paired_difference_bootstrap(
    rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_classes: int, confidence: float,
    n_resamples: int = 2000, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the round-averaged `round_metrics` of model B minus model A, from each round's
    (true, predicted by A, predicted by B) labels; both models are scored on the same resampled images.
    Returns (low, high) arrays."""
    if not rounds or any(not (len(t) == len(a) == len(b)) or len(t) < 2 for t, a, b in rounds):
        raise ValueError("paired_difference_bootstrap needs, per round, three equally long label arrays "
                         "of at least 2 images")
    return _rounds_interval(
        [len(t) for t, _, _ in rounds],
        lambda r, i: (round_metrics(rounds[r][0][i], rounds[r][2][i], n_classes)
                      - round_metrics(rounds[r][0][i], rounds[r][1][i], n_classes)),
        confidence, n_resamples, seed,
    )


def _rounds_interval(sizes: list[int], statistic, confidence: float, n_resamples: int, seed: int):
    """Percentile bootstrap interval of the round-averaged ``statistic(round, image_indices)``, each
    round's images resampled with replacement independently of the others."""

    def averaged(*samples):
        return np.mean([statistic(r, i) for r, i in enumerate(samples)], axis=0)

    result = bootstrap(
        tuple(np.arange(n) for n in sizes),
        averaged,
        vectorized=False,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)
