"""Methods against class imbalance, and their comparison on the validation split.

The original study weighted the loss ('balanced' class weights) and still scored F1 = 0 on
its 14-image class. Three methods are compared here (see `lib.config.MinorityParams`):

- ``class_weight``: the study's choice; every image drawn once per epoch, the loss weighted;
- ``oversample``: no weights, but the training stream draws every class equally often
  (`oversampled_dataset`; repeats of a rare image are augmented differently);
- ``logit_adjustment``: no weights and no resampling while training; afterwards every
  class's log-probability is lowered by ``tau * log(prior)`` (`adjust_probabilities`; Menon et
  al., 2021, "Long-tail learning via logit adjustment"). ``tau`` is 1 by default, not tuned:
  tuning it on the validation split that also ranks the methods would favour this method.

The first round trains every method and keeps the one with the best validation score
(`choose_method`; ties, common when the rare class has two validation images, go to the lower
validation log-loss); later rounds train only that one. The test split never takes part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, precision_recall_fscore_support

METHOD_TITLES = {
    "class_weight": "class weights (the study's choice)",
    "oversample": "oversampling with augmentation",
    "logit_adjustment": "logit adjustment by the class priors",
}


def class_priors(train_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of the training split."""
    counts = np.bincount(train_labels, minlength=n_classes).astype(float)
    if (counts == 0).any():
        raise ValueError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no training image")
    return counts / counts.sum()


def oversampled_dataset(images: np.ndarray, labels: np.ndarray, n_classes: int, seed: int) -> tf.data.Dataset:
    """Unbatched (image, label) pairs, every class drawn with probability 1 / n_classes.

    An epoch has as many draws as the split has images: a rare image appears many times,
    a common one not every epoch. Each class's images cycle in a fresh random order, and
    the class of each draw is random, so the stream differs every epoch (same seed, same
    streams). Only ``images`` (the training split) can appear in it.
    """
    per_class = []
    for label in range(n_classes):
        members = np.flatnonzero(labels == label)
        if len(members) == 0:
            raise ValueError(f"class {label} has no training image to oversample")
        per_class.append(
            tf.data.Dataset.from_tensor_slices((images[members], labels[members]))
            .shuffle(len(members), seed=seed + label, reshuffle_each_iteration=True)
            .repeat()
        )
    mixed = tf.data.Dataset.sample_from_datasets(
        per_class, weights=[1.0 / n_classes] * n_classes, seed=seed, rerandomize_each_iteration=True
    )
    return mixed.take(len(labels))


def balanced_draws(labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``len(labels)`` row indices drawn with replacement, every class with probability 1 / n_classes."""
    counts = np.bincount(labels, minlength=n_classes)
    weights = 1.0 / (n_classes * counts[labels])
    return rng.choice(len(labels), size=len(labels), p=weights / weights.sum())


def adjust_probabilities(probabilities: np.ndarray, priors: np.ndarray, tau: float) -> np.ndarray:
    """Softmax of ``log p - tau * log(prior)``: rare classes gain, common ones lose (tau = 0: unchanged)."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) - tau * np.log(priors)
    logits -= logits.max(axis=1, keepdims=True)
    adjusted = np.exp(logits)
    return adjusted / adjusted.sum(axis=1, keepdims=True)


SELECTION_METRICS = {
    "macro_f1": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
    "balanced_accuracy": balanced_accuracy_score,
}


def tune_tau(probabilities: np.ndarray, labels: np.ndarray, priors: np.ndarray, grid, metric: str) -> float:
    """The ``tau`` of ``grid`` with the best validation ``metric`` (the smallest such tau on ties)."""
    score = SELECTION_METRICS[metric]
    best_tau, best_score = None, -np.inf
    for tau in sorted(grid):
        value = score(labels, adjust_probabilities(probabilities, priors, tau).argmax(axis=1))
        if value > best_score:
            best_tau, best_score = tau, value
    return float(best_tau)


def minority_class(train_labels: np.ndarray, class_names: list[str]) -> str:
    """The class with the fewest training images (the first such name on ties)."""
    counts = np.bincount(train_labels, minlength=len(class_names))
    return class_names[int(np.argmin(counts))]


def scores(labels: np.ndarray, predicted: np.ndarray, class_names: list[str], minority: str) -> dict:
    """Balanced accuracy, macro-F1, and the minority class's precision, recall and F1 of arg-max predictions,
    with its number of images (how much evidence the three rest on)."""
    index = class_names.index(minority)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=[index], zero_division=0
    )
    return {
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=np.arange(len(class_names)), average="macro",
                                   zero_division=0)),
        "minority_precision": float(precision[0]),
        "minority_recall": float(recall[0]),
        "minority_f1": float(f1[0]),
        "minority_images": int(support[0]),
    }


@dataclass
class Postprocessing:
    """What is applied to a model's probabilities before the arg-max (nothing, or logit adjustment)."""

    method: str
    tau: float = 0.0
    priors: list[float] = field(default_factory=list)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        if self.method != "logit_adjustment" or self.tau == 0.0:
            return probabilities
        return adjust_probabilities(probabilities, np.asarray(self.priors), self.tau)

    def to_dict(self) -> dict:
        return {"method": self.method, "tau": self.tau, "priors": self.priors}


def fit_postprocessing(method: str, val_probabilities, val_labels, train_labels, n_classes, minority_params) -> Postprocessing:
    """Post-processing for ``method``: for logit adjustment, tau tuned on the validation split."""
    if method != "logit_adjustment":
        return Postprocessing(method)
    priors = class_priors(train_labels, n_classes)
    tau = tune_tau(val_probabilities, val_labels, priors, minority_params.tau_grid, minority_params.selection_metric)
    return Postprocessing(method, tau, [float(p) for p in priors])


def method_row(method: str, post: Postprocessing, split: str, probabilities, labels, class_names, minority) -> dict:
    """One row of the method comparison: a method's scores on one split, after its post-processing."""
    adjusted = post.apply(probabilities)
    return {"method": method, "split": split, "tau": post.tau,
            **scores(labels, adjusted.argmax(axis=1), class_names, minority),
            "log_loss": float(log_loss(labels, adjusted, labels=np.arange(len(class_names))))}


def choose_method(table: pd.DataFrame, metric: str, order: list[str]) -> str:
    """The method with the best validation ``metric``.

    Ties go to the lower validation log-loss (when the table has it): with a handful of rare
    validation images, several methods often classify every one right, and the log-loss still
    tells which is more confident where it is right. Remaining ties go to the earlier method
    in ``order``.
    """
    val = table[table["split"] == "val"].set_index("method").reindex(order).dropna(subset=[metric])
    if val.empty:
        raise ValueError("no method has validation scores to choose from")
    tied = val[val[metric] >= val[metric].max() - 1e-12]
    if "log_loss" in tied:
        tied = tied[tied["log_loss"] <= tied["log_loss"].min() + 1e-12]
    return str(tied.index[0])
