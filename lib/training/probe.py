"""A sanity floor for transfer learning: a linear probe on MobileNetV2's frozen ImageNet features.

Fine-tuning should do at least as well as a logistic regression on the features it starts
from. The probe is that regression: the frozen base's pooled output (global average pooling
of `lib.training.models.mobilenet_v2_base`, inputs scaled as `lib.training.models.build_mobilenet_v2` scales
them) of the **un-augmented** training images, standardised, then scikit-learn's
``LogisticRegression``. It is trained and scored in every round beside the fine-tuned model,
on the same split, with the same minority-class method, and both models' predictions of the
validation images are saved side by side (`lib.core.paths.ModelPaths.probe_validation`).

Whether the fine-tuned model is below its probe beyond noise (a paired interval on those
validation images), and the warning that says so, are `lib.analysis.probe_check`'s. (On ~1,800
small greyscale images in 10 classes at 64 px, MobileNetV2 under the study's augmentation
scored 28 % test accuracy, its probe 88 %: the comparison then announced a 70-point CNN win
that was an artefact.)

The probe is a floor, not a competitor: nothing about it is tuned (see `fit_probe`), and it
takes no part in the paired tests or the significance rule of `lib.analysis.compare`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.core import minority, progress
from lib.core.config import Params
from lib.core.study import PROBE_MODEL, PROBE_NAME
from lib.core.provenance import set_seed
from lib.data.inputs import image_batches
from lib.data.pixels import StudyData
from lib.training import evaluate
from lib.training.experiment import Experiment, TrainedModel
from lib.training.features import feature_extractor

# LogisticRegression as scikit-learn sets it up, but for the iteration cap:
# - C = 1 (L2), the library default, on standardised features: with 1,280 features and a few hundred to a
#   few thousand images this is a mild penalty that keeps the multinomial fit well posed when the classes
#   are separable. It is not tuned: the validation split is where the probe and the fine-tuned model are
#   compared, and a C chosen there would flatter the probe (the test split is never looked at).
# - max_iter = 1000 instead of 100: lbfgs needs more than 100 iterations on 1,280 standardised features
#   to converge, and an unconverged floor would be an arbitrary one.
PROBE_C = 1.0
PROBE_MAX_ITER = 1000


def class_weight(method: minority.MinorityMethod) -> str | None:
    """The probe's ``class_weight`` under the round's minority-class method.

    Class weights and oversampling both make every class count equally in expectation (oversampling by
    drawing every class equally often, which a full-batch fit cannot do): 'balanced' weights, the same
    weights the class-weight method gives the networks' loss. Logit adjustment trains unweighted and
    shifts the probabilities afterwards (`probe_postprocessing`).
    """
    return "balanced" if method.weights_loss or method.balances_sampling else None


def fit_probe(features: np.ndarray, labels: np.ndarray, method: minority.MinorityMethod) -> Pipeline:
    """StandardScaler + LogisticRegression (`PROBE_C`, `PROBE_MAX_ITER`) fitted on training features."""
    classifier = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER, class_weight=class_weight(method))
    # float64: in float32 scikit-learn's probabilities sum to one only within 1e-7, which log_loss flags
    return make_pipeline(StandardScaler(), classifier).fit(np.asarray(features, dtype=np.float64), labels)


def probabilities(probe: Pipeline, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities, one column per class index (a class the probe never saw gets probability 0)."""
    out = np.zeros((len(features), n_classes))
    out[:, probe.classes_] = probe.predict_proba(np.asarray(features, dtype=np.float64))
    return out


# --------------------------------------------------------------------------------------
# The frozen features of the un-augmented images
# --------------------------------------------------------------------------------------


def frozen_features(data: StudyData, params: Params, seed: int,
                    cached: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The frozen base's pooled output (float32) of every un-augmented training, validation and test image of
    ``data``, by split. ``cached``: splits whose features the activation cache already holds
    (`lib.training.activation_cache.ActivationCache.clean_pooled`), not computed again. ``seed``: the round's."""
    features, extractor = {}, None
    for name in ("train", "val", "test"):
        if name in (cached or {}):
            features[name] = np.asarray(cached[name], dtype=np.float32)
            continue
        if extractor is None:  # built only when some split is not cached
            # With random weights (mobilenet_v2.weights: null) the round's seed is set first, so the base
            # starts as the first trained model's did (`lib.training.experiment.train_each_method` sets it before each).
            set_seed(seed, deterministic=params.training.deterministic)
            extractor = feature_extractor(params.data.image_size, params.mobilenet_v2.weights)
        batches = image_batches(getattr(data, name).images, params.training.batch_size)
        features[name] = np.asarray(extractor.predict(batches, verbose=0), dtype=np.float32)
    return features


# --------------------------------------------------------------------------------------
# Training, scoring and saving the probe of one round
# --------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """The probe of one round: its test metrics (as `lib.training.experiment.compute_evaluation` writes a model's,
    with both models' validation scores in ``metrics['validation']``), its test predictions, and the class each
    validation image is given by the fine-tuned model and by the probe (`validation_table`)."""

    metrics: dict
    predictions: pd.DataFrame
    validation: pd.DataFrame

    def test_scores(self, model_metrics: dict) -> pd.DataFrame:
        """The fine-tuned model's test scores (its ``metrics.json``) and the probe's, one row each."""
        keys = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
                "loss": "loss"}
        rows = {f"{model_metrics['model']} (fine-tuned)": model_metrics, PROBE_NAME: self.metrics}
        return pd.DataFrame({name: {words: m[key] for key, words in keys.items()} for name, m in rows.items()}).T


def validation_scores(probabilities_: np.ndarray, labels: np.ndarray, class_names: list[str],
                      rare: str) -> dict:
    """`lib.core.minority.scores` of arg-max predictions: the numbers the minority-class methods are chosen by."""
    return minority.scores(labels, probabilities_.argmax(axis=1), class_names, rare)


def validation_table(split, fine_tuned: np.ndarray, probe: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Per validation image (``split``: `lib.data.pixels.SplitData`): its relpath, true class, and the class the
    fine-tuned model and the probe predict (arg-max of their post-processed probabilities)."""
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame({"relpath": split.rows["relpath"].to_numpy(), "true_label": names[split.labels],
                         "fine_tuned": names[fine_tuned.argmax(axis=1)], "probe": names[probe.argmax(axis=1)]})


def compute_probe(experiment: Experiment, chosen: TrainedModel) -> ProbeResult:
    """Train the probe of this round with the chosen model's minority-class method, score it on the test
    split, compare it with the chosen (fine-tuned) model on validation, and write its files
    (`lib.core.paths.ModelPaths.probe_predictions`, ``probe_metrics``, ``probe_validation``).

    ``chosen``: the `lib.training.experiment.TrainedModel` the round keeps; the cached frozen features of what it
    trained on (``chosen.inputs``, `lib.training.recipes.mobilenet_v2_by_method`) are reused.
    """
    progress.report("stage", text="the linear probe")
    data, names, params = experiment.data, experiment.data.class_names, experiment.params
    method = minority.METHODS[chosen.method]
    start = time.perf_counter()
    cached = chosen.inputs.clean_pooled() if chosen.inputs is not None else {}
    features, from_cache = frozen_features(data, params, experiment.round.seed, cached), sorted(cached)
    feature_seconds = time.perf_counter() - start
    start = time.perf_counter()
    probe = fit_probe(features["train"], data.train.labels, method)
    fit_seconds = time.perf_counter() - start

    n_classes = experiment.n_classes
    val = probabilities(probe, features["val"], n_classes)
    post = minority.fit_postprocessing(method.name, val, data.val.labels, data.train.labels, n_classes,
                                       params.minority)
    val, test = post.apply(val), post.apply(probabilities(probe, features["test"], n_classes))

    metric, rare = params.minority.selection_metric, minority.minority_class(data.train.labels, names)
    fine_tuned_val = chosen.postprocessing.apply(chosen.val_probabilities)
    fine_tuned = validation_scores(fine_tuned_val, data.val.labels, names, rare)
    probe_val = validation_scores(val, data.val.labels, names, rare)
    predictions = evaluate.predictions_table(data.test.rows, data.test.labels, test, names)
    metrics = {
        **evaluate.test_metrics(PROBE_NAME, experiment.round, names, data.test.labels, test, method.name, post),
        "classifier": {"C": PROBE_C, "max_iter": PROBE_MAX_ITER, "class_weight": class_weight(method),
                       "iterations": int(probe[-1].n_iter_.max()), "features": int(features["train"].shape[1])},
        "features_from_cache": from_cache,
        "feature_seconds": round(feature_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "validation": {"metric": metric, "images": len(data.val), "fine_tuned": fine_tuned[metric],
                       "probe": probe_val[metric], "fine_tuned_method": chosen.method},
    }
    files = experiment.round_paths.model(PROBE_MODEL.name)
    predictions.to_csv(files.probe_predictions, index=False)
    files.probe_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    validation = validation_table(data.val, fine_tuned_val, val, names)
    validation.to_csv(files.probe_validation, index=False)
    return ProbeResult(metrics, predictions, validation)


def read_probe(experiment: Experiment) -> ProbeResult:
    """What `compute_probe` returned when the step ran, read from the files it wrote."""
    files = experiment.round_paths.model(PROBE_MODEL.name)
    return ProbeResult(json.loads(files.probe_metrics.read_text()), pd.read_csv(files.probe_predictions),
                       pd.read_csv(files.probe_validation))
