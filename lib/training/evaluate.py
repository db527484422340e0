"""Test-set evaluation: predictions, metrics, confusion matrices, inference time.

Metrics come from scikit-learn, computed on the predicted class (arg-max of the softmax).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from lib.data.inputs import image_batches


def predict(model, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Class probabilities for uint8 images, and the inference wall time per image (seconds).

    The images are converted to float32 a batch at a time (`lib.data.inputs.image_batches`), never all
    at once. One warm-up batch runs first, so the timing excludes graph tracing.
    """

    model.predict(image_batches(images[:batch_size], batch_size), verbose=0)
    start = time.perf_counter()
    probabilities = model.predict(image_batches(images, batch_size), verbose=0)
    return probabilities, (time.perf_counter() - start) / max(1, len(images))


def test_metrics(model: str, round_, class_names: list[str], labels: np.ndarray, probabilities: np.ndarray,
                 method: str, postprocessing) -> dict:
    """What every ``metrics.json`` of a round opens with (a model's, the linear probe's): which model, round and
    seed, the classes and test images, `classification_metrics` of the test probabilities (after the method's
    post-processing), and the minority-class method with its post-processing."""
    return {
        "model": model,
        "round": round_.name,
        "seed": round_.seed,
        "class_names": class_names,
        "test_images": len(labels),
        **classification_metrics(labels, probabilities, class_names),
        "minority_method": method,
        "postprocessing": postprocessing.to_dict(),
    }


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]
) -> dict:
    """Accuracy, loss, balanced accuracy, macro/weighted F1, and per-class precision/recall/F1/support."""
    labels = np.arange(len(class_names))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "loss": float(log_loss(y_true, probabilities, labels=labels)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
    }


def per_class_table(metrics: dict) -> pd.DataFrame:
    """The per-class part of `classification_metrics` as a table (rows: classes)."""
    return pd.DataFrame(metrics["per_class"]).T.rename_axis("class").astype(
        {"precision": float, "recall": float, "f1": float, "support": int}
    )


def confusion_table(
    true_labels, predicted_labels, class_names: list[str], normalize: bool = False
) -> pd.DataFrame:
    """Confusion matrix of class names (rows: true class, columns: predicted), counts or row-normalised."""
    matrix = confusion_matrix(
        true_labels, predicted_labels, labels=class_names, normalize="true" if normalize else None
    )
    return pd.DataFrame(
        matrix, index=pd.Index(class_names, name="true"), columns=pd.Index(class_names, name="predicted")
    )


def headline_table(metrics: dict) -> pd.DataFrame:
    """The test-set numbers a reader looks at first, one row, rounded for display."""
    row = {
        "accuracy": metrics["accuracy"],
        "balanced accuracy": metrics["balanced_accuracy"],
        "macro-F1": metrics["macro_f1"],
        "weighted-F1": metrics["weighted_f1"],
        "loss": metrics["loss"],
        "test images": metrics["test_images"],
        "epochs run": sum(metrics["epochs_run"].values()),
        "training time (s)": metrics["training_seconds"],
        "inference (ms / image)": 1000 * metrics["inference_seconds_per_image"],
    }
    return pd.DataFrame([row], index=[metrics["model"]]).round(3)


def predictions_table(rows: pd.DataFrame, y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per test image: path, true and predicted label, one probability column per class."""
    table = pd.DataFrame(
        {
            "path": rows["path"].to_numpy(),
            "relpath": rows["relpath"].to_numpy(),
            "true_label": np.asarray(class_names)[y_true],
            "predicted_label": np.asarray(class_names)[probabilities.argmax(axis=1)],
        }
    )
    for index, name in enumerate(class_names):
        table[f"p_{name}"] = probabilities[:, index]
    return table
