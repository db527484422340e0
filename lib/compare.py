"""Both models side by side, computed only from the artefacts their notebooks wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from lib.paths import RunPaths
from lib.stats import bootstrap_ci, mcnemar_exact

# Folder name of each model's artefacts -> the name a reader sees.
MODELS = {"cnn": "Custom CNN", "mobilenetv2": "MobileNetV2"}


@dataclass(frozen=True)
class ModelResults:
    """What one model notebook wrote: metrics, per-epoch history, test predictions."""

    name: str
    metrics: dict
    history: pd.DataFrame
    predictions: pd.DataFrame

    @property
    def class_names(self) -> list[str]:
        return self.metrics["class_names"]


def load_results(paths: RunPaths, models: dict[str, str] = MODELS) -> dict[str, ModelResults]:
    """Read every model's artefacts; a missing one names the notebook that writes it."""
    results = {}
    for folder, name in models.items():
        files = paths.model(folder)
        if not files.metrics.is_file():
            raise FileNotFoundError(f"{files.metrics} is missing: run the {name} notebook first")
        results[folder] = ModelResults(
            name=name,
            metrics=json.loads(files.metrics.read_text()),
            history=pd.read_csv(files.history),
            predictions=pd.read_csv(files.predictions, keep_default_na=False),
        )
    return results


def trainable_parameters(metrics: dict) -> int:
    """The most parameters a model trains in any phase (MobileNetV2: phase 2, fine-tuning)."""
    return max(v for k, v in metrics["parameters"].items() if k.startswith("trainable"))


def overfitting_gap(history: pd.DataFrame) -> float:
    """Training minus validation accuracy at the kept epoch, in percentage points."""
    kept = history[history["best"]].iloc[-1]
    return 100.0 * float(kept["accuracy"] - kept["val_accuracy"])


COUNT_ROWS = ("total parameters", "trainable parameters", "epochs run")  # whole numbers in comparison_table


def comparison_table(results: dict[str, ModelResults]) -> pd.DataFrame:
    """One row per quantity, one column per model: quality, per-class F1, size and cost."""
    columns = {}
    for result in results.values():
        m = result.metrics
        column = {
            "test accuracy": m["accuracy"],
            "test loss": m["loss"],
            "balanced accuracy": m["balanced_accuracy"],
            "macro-F1": m["macro_f1"],
            "weighted-F1": m["weighted_f1"],
        }
        column |= {f"F1: {name}": scores["f1"] for name, scores in m["per_class"].items()}
        column |= {
            "total parameters": m["parameters"]["total"],
            "trainable parameters": trainable_parameters(m),
            "model size on disk (MB)": m["model_file_bytes"] / 1e6,
            "epochs run": sum(m["epochs_run"].values()),
            "training wall time (s)": m["training_seconds"],
            "inference time (ms / image)": 1000 * m["inference_seconds_per_image"],
            "train - val accuracy at kept epoch (points)": overfitting_gap(result.history),
        }
        columns[result.name] = column
    return pd.DataFrame(columns)


def per_class_f1(results: dict[str, ModelResults]) -> pd.DataFrame:
    """F1 per class (rows) and model (columns)."""
    return pd.DataFrame(
        {r.name: {c: s["f1"] for c, s in r.metrics["per_class"].items()} for r in results.values()}
    ).rename_axis("class")


def correctness(results: dict[str, ModelResults]) -> pd.DataFrame:
    """Per test image (rows, by relpath), whether each model (columns) classified it correctly."""
    frames = {
        r.name: r.predictions.set_index("relpath").pipe(lambda p: p["true_label"] == p["predicted_label"])
        for r in results.values()
    }
    table = pd.DataFrame(frames)
    if table.isna().any().any():
        raise ValueError("the models were tested on different images: their predictions do not pair up")
    return table


def agreement_table(results: dict[str, ModelResults]) -> pd.DataFrame:
    """The 2 x 2 table of paired outcomes: rows first model right / wrong, columns second model."""
    correct = correctness(results)
    first, second = correct.columns[:2]
    outcome = {True: "right", False: "wrong"}
    return pd.crosstab(
        correct[first].map(outcome).rename(f"{first}"), correct[second].map(outcome).rename(f"{second}")
    ).reindex(index=["right", "wrong"], columns=["right", "wrong"], fill_value=0)


def misclassified(results: dict[str, ModelResults]) -> pd.DataFrame:
    """Every test image some model got wrong: model, path, true and predicted label, confidence."""
    rows = []
    for r in results.values():
        wrong = r.predictions[r.predictions["true_label"] != r.predictions["predicted_label"]]
        probabilities = wrong.filter(like="p_").to_numpy()
        rows.append(
            pd.DataFrame(
                {
                    "model": r.name,
                    "path": wrong["path"],
                    "relpath": wrong["relpath"],
                    "true_label": wrong["true_label"],
                    "predicted_label": wrong["predicted_label"],
                    "confidence": probabilities.max(axis=1) if len(wrong) else np.array([]),
                }
            )
        )
    return pd.concat(rows, ignore_index=True).sort_values(["model", "confidence"], ascending=[True, False])


def confusion_counts(results: dict[str, ModelResults]) -> dict[str, pd.DataFrame]:
    """Each model's confusion matrix (counts), keyed by its display name."""
    from lib.evaluate import confusion_table

    return {
        r.name: confusion_table(r.predictions["true_label"], r.predictions["predicted_label"], r.class_names)
        for r in results.values()
    }


def histories(results: dict[str, ModelResults]) -> dict[str, pd.DataFrame]:
    return {r.name: r.history for r in results.values()}


INTERVAL_METRICS = {
    "accuracy": accuracy_score,
    "balanced accuracy": balanced_accuracy_score,
    "macro-F1": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
}


def intervals(
    results: dict[str, ModelResults], seed: int, confidence: float = 0.95, n_resamples: int = 2000
) -> pd.DataFrame:
    """Each model's headline metrics with a bootstrap interval over the test images (rows: models)."""
    rows = {}
    for r in results.values():
        true, predicted = r.predictions["true_label"].to_numpy(), r.predictions["predicted_label"].to_numpy()
        row = {}
        for name, metric in INTERVAL_METRICS.items():
            low, high = bootstrap_ci(true, predicted, metric, confidence, n_resamples, seed)
            row |= {name: metric(true, predicted), f"{name} low": low, f"{name} high": high}
        rows[r.name] = row
    return pd.DataFrame(rows).T


def paired_test(results: dict[str, ModelResults]) -> dict:
    """McNemar's exact test of the first two models on the same test images."""
    correct = correctness(results)
    first, second = correct.columns[:2]
    return {"first": first, "second": second, **mcnemar_exact(correct[first], correct[second])}


def difference_is_significant(test: dict, ci: pd.DataFrame, metric: str = "macro-F1", alpha: float = 0.05) -> bool:
    """Only when McNemar's p is at most alpha and the two models' intervals do not overlap."""
    first, second = ci.loc[test["first"]], ci.loc[test["second"]]
    overlap = first[f"{metric} low"] <= second[f"{metric} high"] and second[f"{metric} low"] <= first[f"{metric} high"]
    return test["p_value"] <= alpha and not overlap
