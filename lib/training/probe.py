"""A sanity floor for transfer learning: a linear probe on MobileNetV2's frozen ImageNet features.

Fine-tuning should do at least as well as a logistic regression on the features it starts
from. The probe is that regression: the frozen base's pooled output (global average pooling
of `lib.training.models.mobilenet_v2_base`, inputs scaled as `lib.training.models.build_mobilenet_v2` scales
them) of the **un-augmented** training images, standardised, then scikit-learn's
``LogisticRegression``. It is trained and scored in every round beside the fine-tuned model,
on the same split, with the same minority-class method.

When the fine-tuned model scores below its probe on validation (the study's selection
metric, ``minority.selection_metric``), fine-tuning has made the pretrained features worse
than a linear read-out of them: something in the training (augmentation that the frozen
features cannot follow, the learning rate, an input size far from ImageNet's) costs more
than fine-tuning gains, and a comparison with the CNN built on that model says more about
the training than about transfer learning. `below_probe_warning` decides that and words it,
for the MobileNetV2 notebook and the report alike. (On ~1,800 small greyscale images in 10
classes at 64 px, MobileNetV2 under the study's augmentation scored 28 % test accuracy, its
probe 88 %: the comparison then announced a 70-point CNN win that was an artefact.)

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

from lib.core import minority
from lib.core.paths import PROBE_MODEL, PROBE_NAME
from lib.core.provenance import set_seed
from lib.data.inputs import build_augmentation, image_batches
from lib.training import evaluate
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


def frozen_features(experiment, inputs=None) -> tuple[dict[str, np.ndarray], list[str]]:
    """The frozen base's pooled output (float32) of every un-augmented training, validation and test image,
    by split; and the splits taken from ``inputs``' cache (`lib.training.activation_cache.ActivationCache.clean_pooled`:
    validation, and training when it is not augmented), which are not computed again."""
    cached = inputs.clean_pooled() if inputs is not None else {}
    features, extractor = {}, None
    for name in ("train", "val", "test"):
        if name in cached:
            features[name] = np.asarray(cached[name], dtype=np.float32)
            continue
        if extractor is None:  # built only when some split is not cached
            # With random weights (mobilenet_v2.weights: null) the round's seed is set first, so the base
            # starts as the first trained model's did (`lib.training.experiment.train_each_method` sets it before each).
            set_seed(experiment.round.seed, deterministic=experiment.params.training.deterministic)
            extractor = feature_extractor(experiment.params.data.image_size, experiment.params.mobilenet_v2.weights)
        split = getattr(experiment.data, name)
        batches = image_batches(split.images, experiment.params.training.batch_size)
        features[name] = np.asarray(extractor.predict(batches, verbose=0), dtype=np.float32)
    return features, sorted(cached)


# --------------------------------------------------------------------------------------
# Training, scoring and saving the probe of one round
# --------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """The probe of one round: its test metrics (as `lib.training.experiment.evaluate_and_save` writes a model's),
    its test predictions, and the validation check against the fine-tuned model (``metrics['validation']``)."""

    metrics: dict
    predictions: pd.DataFrame

    def test_scores(self, model_metrics: dict) -> pd.DataFrame:
        """The fine-tuned model's test scores (its ``metrics.json``) and the probe's, one row each."""
        keys = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
                "loss": "loss"}
        rows = {f"{model_metrics['model']} (fine-tuned)": model_metrics, PROBE_NAME: self.metrics}
        return pd.DataFrame({name: {words: m[key] for key, words in keys.items()} for name, m in rows.items()}).T

    @property
    def check(self) -> pd.DataFrame:
        """One row (this round): the validation scores `below_probe_warning` reads."""
        return check_table({self.metrics["round"]: self.metrics})


def validation_scores(probabilities_: np.ndarray, labels: np.ndarray, class_names: list[str],
                      rare: str) -> dict:
    """`lib.core.minority.scores` of arg-max predictions: the numbers the minority-class methods are chosen by."""
    return minority.scores(labels, probabilities_.argmax(axis=1), class_names, rare)


def fit_and_save(experiment, chosen, inputs=None) -> ProbeResult:
    """Train the probe of this round with the chosen model's minority-class method, score it on the test
    split, compare it with the chosen (fine-tuned) model on validation, and write its files
    (`lib.core.paths.ModelPaths.probe_predictions`, ``probe_metrics``).

    ``chosen``: the `lib.training.experiment.TrainedModel` the round keeps; ``inputs``: what it trained on
    (`lib.training.recipes.mobilenet_v2_by_method`), whose cached frozen features are reused.
    """
    data, names, params = experiment.data, experiment.data.class_names, experiment.params
    method = minority.METHODS[chosen.method]
    start = time.perf_counter()
    features, from_cache = frozen_features(experiment, inputs)
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
    fine_tuned = validation_scores(chosen.postprocessing.apply(chosen.val_probabilities), data.val.labels, names, rare)
    probe_val = validation_scores(val, data.val.labels, names, rare)
    predictions = evaluate.predictions_table(data.test.rows, data.test.labels, test, names)
    metrics = {
        "model": PROBE_NAME,
        "round": experiment.round.name,
        "seed": experiment.round.seed,
        "class_names": names,
        "test_images": len(data.test),
        **evaluate.classification_metrics(data.test.labels, test, names),
        "minority_method": method.name,
        "postprocessing": post.to_dict(),
        "classifier": {"C": PROBE_C, "max_iter": PROBE_MAX_ITER, "class_weight": class_weight(method),
                       "iterations": int(probe[-1].n_iter_.max()), "features": int(features["train"].shape[1])},
        "features_from_cache": from_cache,
        "feature_seconds": round(feature_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "validation": {"metric": metric, "images": len(data.val), "fine_tuned": fine_tuned[metric],
                       "probe": probe_val[metric], "fine_tuned_method": chosen.method},
    }
    files = experiment.round_paths.model(PROBE_MODEL)
    predictions.to_csv(files.probe_predictions, index=False)
    files.probe_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    return ProbeResult(metrics, predictions)


def saved_result(experiment) -> ProbeResult:
    """What `fit_and_save` returned when the step ran, read from the files it wrote."""
    files = experiment.round_paths.model(PROBE_MODEL)
    return ProbeResult(json.loads(files.probe_metrics.read_text()), pd.read_csv(files.probe_predictions))


# --------------------------------------------------------------------------------------
# The rule, and its words
# --------------------------------------------------------------------------------------


def check_table(probe_metrics: dict[str, dict]) -> pd.DataFrame:
    """Per round (``{round: probe metrics}``): the selection metric, the fine-tuned model's and the probe's
    validation scores, and whether the fine-tuned model is below its probe (`fine_tuned_below_probe`)."""
    rows = {name: {"metric": m["validation"]["metric"], "fine_tuned": m["validation"]["fine_tuned"],
                   "probe": m["validation"]["probe"]} for name, m in probe_metrics.items()}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("round")
    if table.empty:
        return pd.DataFrame(columns=["metric", "fine_tuned", "probe", "below_probe"]).rename_axis("round")
    return table.assign(below_probe=[fine_tuned_below_probe(f, p) for f, p in zip(table["fine_tuned"], table["probe"])])


def fine_tuned_below_probe(fine_tuned: float, probe: float) -> bool:
    """The rule: the fine-tuned model scores strictly below its linear probe on validation. A tie is no
    warning (on easy data both can classify every validation image right)."""
    return float(fine_tuned) < float(probe)


METRIC_WORDS = {"macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy"}
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


def below_probe_warning(checks: pd.DataFrame, params) -> str | None:
    """The warning when any round's fine-tuned MobileNetV2 scores below its linear probe on validation
    (``checks``: `check_table`), in plain words with the likely causes; None when none does."""
    below = checks[checks["below_probe"].astype(bool)] if len(checks) else checks
    if below.empty:
        return None
    metric = METRIC_WORDS.get(str(below["metric"].iloc[0]), str(below["metric"].iloc[0]))
    scores = "; ".join(f"round {name}: {row['fine_tuned']:.3f} against {row['probe']:.3f}"
                       for name, row in below.iterrows())
    where = ("in every round" if len(below) == len(checks) and len(checks) > 1 else
             f"in {len(below)} of {len(checks)} rounds" if len(checks) > 1 else "")
    return (
        f"Warning: the fine-tuned MobileNetV2 scores below a linear probe on its own frozen ImageNet features "
        f"on the validation split{' ' + where if where else ''} (validation {metric}, fine-tuned against probe: "
        f"{scores}). Trained as configured, MobileNetV2 does worse than a logistic regression on the frozen features "
        "it starts from, so its scores here say more about its training than about transfer learning, and its "
        f"comparison with the custom CNN should not be read as a verdict on transfer learning. Likely causes: "
        f"{likely_causes(params)}."
    )


def above_probe_sentence(checks: pd.DataFrame) -> str:
    """What the check found when there is no warning (``checks``: `check_table`)."""
    if checks.empty:
        return "No linear probe was scored."
    metric = METRIC_WORDS.get(str(checks["metric"].iloc[0]), str(checks["metric"].iloc[0]))
    scores = "; ".join(f"{name}: {row['fine_tuned']:.3f} against {row['probe']:.3f}" for name, row in checks.iterrows())
    return (f"The fine-tuned MobileNetV2 scores at least as well as a linear probe on its own frozen ImageNet "
            f"features on the validation split in {'every round' if len(checks) > 1 else 'the round'} "
            f"(validation {metric}, fine-tuned against probe: {scores}).")
