"""How far a model's confidence can be trusted: calibration error, reliability bins, PR curves.

With imbalanced classes accuracy hides a lot; these read the predicted probabilities
themselves. The expected calibration error (ECE) bins test images by the model's top
probability and averages |accuracy - confidence| over the bins, weighted by their size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve


BINS = 10  # equal-width confidence bins of the reliability diagram and the ECE


def reliability_table(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = BINS) -> pd.DataFrame:
    """Per equal-width confidence bin: images, mean confidence, accuracy (empty bins left out)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    probabilities = np.asarray(probabilities, dtype=float)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    table = (
        pd.DataFrame({"bin": bins, "confidence": confidence, "accuracy": correct.astype(float)})
        .groupby("bin")
        .agg(images=("accuracy", "size"), confidence=("confidence", "mean"), accuracy=("accuracy", "mean"))
    )
    table["low"], table["high"] = edges[table.index], edges[table.index + 1]
    return table.reset_index(drop=True)[["low", "high", "images", "confidence", "accuracy"]]


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = BINS) -> float:
    """Size-weighted mean |accuracy - confidence| over the confidence bins (0 is perfectly calibrated)."""
    table = reliability_table(labels, probabilities, n_bins)
    weights = table["images"] / table["images"].sum()
    return float((weights * (table["accuracy"] - table["confidence"]).abs()).sum())


def precision_recall_curves(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One-vs-rest precision-recall curve of every class: columns class, recall, precision, average_precision."""
    labels = np.asarray(labels)
    curves = []
    for index, name in enumerate(class_names):
        positive = labels == index
        if not positive.any():
            continue  # no test image of this class: no curve to draw
        precision, recall, _ = precision_recall_curve(positive, probabilities[:, index])
        ap = average_precision_score(positive, probabilities[:, index])
        curves.append(pd.DataFrame({"class": name, "recall": recall, "precision": precision, "average_precision": ap}))
    return pd.concat(curves, ignore_index=True)
