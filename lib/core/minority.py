"""Methods against class imbalance, and their comparison on the validation split.

The original study weighted the loss ('balanced' class weights) and still scored F1 = 0 on
its 14-image class. Four methods can be compared here (`lib.core.config.MinorityParams.methods` lists
those a run compares; the default study lists all four):

- ``class_weight``: the study's choice; every image drawn once per epoch, the loss weighted;
- ``oversample``: no weights, but each epoch draws every class equally often
  (`balanced_draws`; repeats of a rare image are augmented differently);
- ``logit_adjustment``: no weights and no resampling while training; afterwards every
  class's log-probability is lowered by ``tau * log(prior)`` (`adjust_probabilities`; Menon et
  al., 2021, "Long-tail learning via logit adjustment"). ``tau`` is 1 by default, not tuned:
  tuning it on the validation split that also ranks the methods would favour this method;
- ``mixup``: synthetic images for the rare class. Each epoch draws every class equally often (as
  ``oversample``), and each training batch is mixed with itself in another order: image and one-hot
  label become ``lam * a + (1 - lam) * b``, ``lam`` drawn per pair from Beta(0.4, 0.4) (`mix_batch`;
  Zhang et al., 2018, "mixup: Beyond empirical risk minimization"). A rare image then appears in
  many blends with other classes, not only as itself. It mixes whatever the training stream serves:
  pixels for the CNN (after augmentation), and for MobileNetV2's cached phases the frozen layers'
  activations (`lib.training.activation_cache`; mixing in feature space, "manifold mixup", Verma et
  al., 2019), since mixed pixels would need a cache of their own each epoch. ``alpha`` is fixed
  (0.4: blends mostly near one of the two images), not tuned, for the reason given for ``tau``.

Each method is a `MinorityMethod` in `METHODS`, saying what it changes; the training recipes
(`lib.training.recipes`) and the input streams (`lib.data.inputs`) ask it, never its name.

The first round trains every method and keeps the one with the best validation score
(`best_method`; ties, common when the rare class has two validation images, go to the lower
validation log-loss); later rounds train only that one. The test split never takes part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, precision_recall_fscore_support
from sklearn.utils.class_weight import compute_class_weight


@dataclass(frozen=True)
class MinorityMethod:
    """One way to keep a rare class from being ignored, by what it changes: the loss, the
    sampling of each training epoch, or the probabilities after training. Both models use
    the same method objects, so "oversampling" is one procedure for the CNN and MobileNetV2."""

    name: str  # its value in `lib.core.config.MinorityParams.methods`
    title: str  # in words
    weights_loss: bool = False  # scikit-learn's 'balanced' class weights in the loss
    balances_sampling: bool = False  # every class drawn equally often in each epoch (`epoch_rows`)
    adjusts_logits: bool = False  # probabilities shifted by the class priors after training (`Postprocessing`)
    mix_alpha: float = 0.0  # > 0: each training batch blended with itself reordered, Beta(alpha, alpha) (`mix_batch`)

    def class_weight(self, train_labels: np.ndarray, n_classes: int) -> dict[int, float] | None:
        """Keras' ``class_weight`` argument: 'balanced' weights by label index, or None."""
        if not self.weights_loss:
            return None
        weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=train_labels)
        return {index: float(weight) for index, weight in enumerate(weights)}

    def epoch_rows(self, labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
        """The training rows of one epoch, in order: each once, shuffled; or, when the method balances
        the sampling, as many draws with replacement, every class equally often (`balanced_draws`)."""
        if self.balances_sampling:
            return balanced_draws(labels, n_classes, rng)
        return rng.permutation(len(labels))

    def mix_batch(self, inputs: np.ndarray, targets: np.ndarray, rng: np.random.Generator):
        """A training batch as the method trains on it: unchanged, or, when it mixes, every row blended with
        another row of the batch (a random pairing), inputs and one-hot targets by the same weight."""
        if not self.mix_alpha:
            return inputs, targets
        partner = rng.permutation(len(inputs))
        weight = rng.beta(self.mix_alpha, self.mix_alpha, len(inputs)).astype(inputs.dtype)
        def blend(values):
            shaped = weight.reshape(-1, *[1] * (values.ndim - 1))
            return shaped * values + (1 - shaped) * values[partner]
        return blend(inputs), blend(targets)


METHODS = {
    method.name: method
    for method in (
        MinorityMethod("class_weight", "class weights ('balanced': inverse to each class's share)", weights_loss=True),
        MinorityMethod("oversample", "oversampling the rare classes in the augmented training stream",
                       balances_sampling=True),
        MinorityMethod("logit_adjustment", "logit adjustment by the class priors", adjusts_logits=True),
        MinorityMethod("mixup", "mixup on class-balanced draws (blended images and labels)", balances_sampling=True,
                       mix_alpha=0.4),
    )
}


def class_priors(train_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of the training split."""
    counts = np.bincount(train_labels, minlength=n_classes).astype(float)
    if (counts == 0).any():
        raise ValueError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no training image")
    return counts / counts.sum()


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


METRIC_WORDS = {"macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy"}  # each selection metric in words
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
        if not METHODS[self.method].adjusts_logits or self.tau == 0.0:
            return probabilities
        return adjust_probabilities(probabilities, np.asarray(self.priors), self.tau)

    def to_dict(self) -> dict:
        return {"method": self.method, "tau": self.tau, "priors": self.priors}


def fit_postprocessing(method: str, val_probabilities, val_labels, train_labels, n_classes, minority_params) -> Postprocessing:
    """Post-processing for ``method``: for logit adjustment, tau from ``tau_grid`` (tuned on the validation
    split when the grid has several values)."""
    if not METHODS[method].adjusts_logits:
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


def best_method(table: pd.DataFrame, metric: str, order: list[str]) -> str:
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
