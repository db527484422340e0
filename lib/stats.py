"""Statistics for claims about the models: confidence intervals and a paired test.

- `bootstrap_ci`: a percentile bootstrap interval (scipy) of any metric of (true, predicted)
  labels, resampling test images with their pairs kept together.
- `mcnemar_exact`: McNemar's exact test (statsmodels) of two models on the same images:
  do they err on different images more often than chance allows?
"""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap
from statsmodels.stats.contingency_tables import mcnemar


def bootstrap_ci(
    y_true, y_pred, metric, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """``confidence`` interval of ``metric(y_true, y_pred)`` over test images resampled with replacement."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred) or len(y_true) < 2:
        raise ValueError("bootstrap_ci needs two equally long label arrays of at least 2 images")
    result = bootstrap(
        (y_true, y_pred),
        metric,
        paired=True,
        vectorized=False,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


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
