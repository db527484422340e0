"""Which unlabelled photos to label next: acquisition scores from a model's probabilities (active learning).

A photo is worth labelling when the model is unsure of it. Two scores say how unsure:

- ``margin`` (the default): the top probability minus the second. A small margin is a photo on
  the boundary between two classes, the one place a new label moves a decision. It ignores how
  the remaining probability is spread over classes the photo is clearly not, which entropy
  counts: with five classes, a photo split 0.5 / 0.5 between Milk and Oat-Milk (margin 0) is
  exactly the kind of label the rare class needs, while entropy ranks a photo spread 0.4 /
  0.15 / 0.15 / 0.15 / 0.15 above it. Margin sampling is also the variant that held up best
  in the comparisons of Settles' survey ("Active Learning Literature Survey", 2009, section 3.1).
- ``entropy``: the Shannon entropy of the probabilities (nats); high is unsure.

`labelling_order` ranks photos most uncertain first, deterministically (ties keep the order
given). The probabilities are the model's post-processed ones, the same that `predict` reports.
"""

from __future__ import annotations

import numpy as np


def margin(probabilities: np.ndarray) -> np.ndarray:
    """Top probability minus the second, per row (0: a tie between two classes; 1: certain)."""
    ordered = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)
    return ordered[:, -1] - ordered[:, -2]


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row in nats (0: certain; log(classes): uniform)."""
    p = np.asarray(probabilities, dtype=np.float64)
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)


# Each score and whether a high value means unsure: the one table `labelling_order` and its callers read.
SCORES = {"margin": (margin, False), "entropy": (entropy, True)}
DEFAULT_SCORE = "margin"


def labelling_order(probabilities: np.ndarray, score: str = DEFAULT_SCORE) -> tuple[np.ndarray, np.ndarray]:
    """``(order, values)``: the rows most uncertain first by ``score`` (ties: the earlier row first), and each
    row's score value (in row order)."""
    if score not in SCORES:
        raise ValueError(f"unknown acquisition score {score!r}: choose one of {', '.join(SCORES)}")
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(f"probabilities must be (images, classes >= 2), got shape {probabilities.shape}")
    compute, high_is_unsure = SCORES[score]
    values = compute(probabilities)
    order = np.argsort(-values if high_is_unsure else values, kind="stable")
    return order, values
