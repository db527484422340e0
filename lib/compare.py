"""Both models side by side, computed only from the artefacts their notebooks wrote.

One round's results (`load_results`) give the detailed comparison: confusion matrices,
learning curves, misclassified images. All rounds together (`load_all_rounds`) give the
statistics: means, spreads and bootstrap intervals over rounds, McNemar's test per round,
calibration of the pooled test predictions, and the minority-class method comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.paths import RoundPaths, RunPaths
from lib.stats import mcnemar_exact, paired_difference_bootstrap, round_metrics, rounds_bootstrap

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


def load_results(paths: RoundPaths, models: dict[str, str] = MODELS) -> dict[str, ModelResults]:
    """Read every model's artefacts in one round; a missing one names the notebook that writes it."""
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
    return _paired(pd.DataFrame(frames))


def _paired(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per test image, by relpath), checked to hold every model's result for every image."""
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


HEADLINE_METRICS = ["accuracy", "balanced accuracy", "macro-F1"]


def intervals(
    results: dict[str, ModelResults], seed: int, confidence: float = 0.95, n_resamples: int = 2000
) -> pd.DataFrame:
    """Each model's headline metrics on one round's test images, with a bootstrap interval (rows: models)."""
    rows = {}
    for r in results.values():
        labels = _labels(r)
        values = round_metrics(*labels, len(r.class_names))
        low, high = rounds_bootstrap([labels], len(r.class_names), confidence, n_resamples, seed)
        row = {}
        for i, name in enumerate(HEADLINE_METRICS):  # the first entries of round_metrics
            row |= {name: values[i], f"{name} low": low[i], f"{name} high": high[i]}
        rows[r.name] = row
    return pd.DataFrame(rows).T


def paired_test(results: dict[str, ModelResults]) -> dict:
    """McNemar's exact test of the first two models on the same test images."""
    correct = correctness(results)
    first, second = correct.columns[:2]
    return {"first": first, "second": second, **mcnemar_exact(correct[first], correct[second])}


# --------------------------------------------------------------------------------------
# Across evaluation rounds
# --------------------------------------------------------------------------------------


def load_all_rounds(paths: RunPaths, params, models: dict[str, str] = MODELS) -> dict[str, dict[str, ModelResults]]:
    """Every round's results, by round name, in the order the rounds ran."""
    from lib.rounds import evaluation_rounds

    return {r.name: load_results(paths.round(r.name), models) for r in evaluation_rounds(params.evaluation)}


def _labels(result: ModelResults) -> tuple[np.ndarray, np.ndarray]:
    """A model's test labels as class indices: (true, predicted)."""
    index = {name: i for i, name in enumerate(result.class_names)}
    predictions = result.predictions
    return predictions["true_label"].map(index).to_numpy(), predictions["predicted_label"].map(index).to_numpy()


def metric_names(class_names: list[str]) -> list[str]:
    """The names of `lib.stats.round_metrics`' entries."""
    return [*HEADLINE_METRICS, *[f"F1: {name}" for name in class_names]]


def per_round_table(all_rounds: dict[str, dict[str, ModelResults]]) -> pd.DataFrame:
    """One row per round and model: its seed, minority-class method and test metrics."""
    rows = []
    for round_name, results in all_rounds.items():
        for result in results.values():
            values = round_metrics(*_labels(result), len(result.class_names))
            rows.append({"round": round_name, "model": result.name, "seed": result.metrics.get("seed"),
                         "method": result.metrics.get("minority_method"),
                         **dict(zip(metric_names(result.class_names), values))})
    return pd.DataFrame(rows)


def summary_across_rounds(
    all_rounds: dict[str, dict[str, ModelResults]], seed: int, confidence: float = 0.95, n_resamples: int = 2000
) -> pd.DataFrame:
    """Per model and metric: mean and standard deviation over rounds, and the bootstrap interval of the mean.

    Rows: (model, metric); columns: mean, std, low, high, rounds.
    """
    rows = []
    first = next(iter(all_rounds.values()))
    for folder, example in first.items():
        names = metric_names(example.class_names)
        labels = [_labels(results[folder]) for results in all_rounds.values()]
        values = np.array([round_metrics(t, p, len(example.class_names)) for t, p in labels])
        low, high = rounds_bootstrap(labels, len(example.class_names), confidence, n_resamples, seed)
        for i, metric in enumerate(names):
            rows.append({"model": example.name, "metric": metric, "mean": values[:, i].mean(),
                         "std": values[:, i].std(ddof=1) if len(values) > 1 else 0.0,
                         "low": low[i], "high": high[i], "rounds": len(values)})
    return pd.DataFrame(rows).set_index(["model", "metric"])


def _paired_labels(results: dict[str, ModelResults]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first two models' test labels on the same images, as class indices: (true, first, second)."""
    first, second = list(results.values())[:2]
    index = {name: i for i, name in enumerate(first.class_names)}
    paired = _paired(first.predictions.set_index("relpath")[["true_label", "predicted_label"]].join(
        second.predictions.set_index("relpath")["predicted_label"].rename("second"), how="outer"))
    return tuple(paired[column].map(index).to_numpy() for column in ("true_label", "predicted_label", "second"))


def difference_across_rounds(
    all_rounds: dict[str, dict[str, ModelResults]], seed: int, confidence: float = 0.95, n_resamples: int = 2000
) -> pd.DataFrame:
    """Per metric: the second model's score minus the first's, averaged over rounds, with a paired
    bootstrap interval (both models scored on the same resampled test images in every resample).

    Rows: metric; columns: first, second, difference, low, high.
    """
    first, second = list(next(iter(all_rounds.values())).values())[:2]
    n_classes = len(first.class_names)
    labels = [_paired_labels(results) for results in all_rounds.values()]
    differences = np.mean([round_metrics(t, b, n_classes) - round_metrics(t, a, n_classes) for t, a, b in labels],
                          axis=0)
    low, high = paired_difference_bootstrap(labels, n_classes, confidence, n_resamples, seed)
    return pd.DataFrame({"first": first.name, "second": second.name, "difference": differences, "low": low,
                         "high": high}, index=pd.Index(metric_names(first.class_names), name="metric"))


def paired_tests(all_rounds: dict[str, dict[str, ModelResults]]) -> pd.DataFrame:
    """McNemar's exact test of the two models on each round's test images (rows: rounds)."""
    return pd.DataFrame({name: paired_test(results) for name, results in all_rounds.items()}).T.rename_axis("round")


def intervals_overlap(summary: pd.DataFrame, metric: str = "macro-F1") -> bool:
    """Whether the two models' bootstrap intervals of ``metric`` (averaged over rounds) overlap."""
    intervals = summary.xs(metric, level="metric")
    (low_a, high_a), (low_b, high_b) = intervals[["low", "high"]].to_numpy()[:2]
    return bool(low_a <= high_b and low_b <= high_a)


def rounds_above(tests: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """The rounds whose McNemar p-value is above ``alpha``."""
    return [str(name) for name, p in tests["p_value"].items() if float(p) > alpha]


def paired_evidence_favours(tests: pd.DataFrame, difference: pd.DataFrame, metric: str = "macro-F1",
                            alpha: float = 0.05) -> str | None:
    """The model that every paired comparison favours, or None: McNemar's p at most ``alpha`` in every
    round with more discordant images right for that model, and the paired interval of the difference
    in ``metric`` (`difference_across_rounds`) excluding 0 on its side."""
    if rounds_above(tests, alpha):
        return None
    row = difference.loc[metric]
    # McNemar's discordant images: 'only_b' are those only the second model gets right.
    if row["low"] > 0 and (tests["only_b"] > tests["only_a"]).all():
        return str(row["second"])
    if row["high"] < 0 and (tests["only_a"] > tests["only_b"]).all():
        return str(row["first"])
    return None


def models_differ(summary: pd.DataFrame, tests: pd.DataFrame, metric: str = "macro-F1", alpha: float = 0.05) -> bool:
    """A significant difference: McNemar's p at most ``alpha`` in every round, and the two models'
    intervals of ``metric`` (averaged over rounds) do not overlap."""
    return not rounds_above(tests, alpha) and not intervals_overlap(summary, metric)


def method_comparison(paths: RunPaths, params, models: dict[str, str] = MODELS) -> pd.DataFrame:
    """The minority-class methods compared in the first round, for every model (empty if none compared)."""
    from lib.rounds import evaluation_rounds

    first = paths.round(evaluation_rounds(params.evaluation)[0].name)
    tables = [pd.read_csv(first.model(folder).methods).assign(model=name)
              for folder, name in models.items() if first.model(folder).methods.is_file()]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def pooled_test_predictions(all_rounds: dict[str, dict[str, ModelResults]], folder: str) -> tuple[np.ndarray, np.ndarray]:
    """One model's test labels (indices) and probabilities, pooled over every round."""
    labels, probabilities = [], []
    for results in all_rounds.values():
        result = results[folder]
        labels.append(_labels(result)[0])
        probabilities.append(result.predictions[[f"p_{n}" for n in result.class_names]].to_numpy())
    return np.concatenate(labels), np.concatenate(probabilities)


def calibration_by_model(all_rounds: dict[str, dict[str, ModelResults]], n_bins: int = 10) -> dict[str, dict]:
    """Per model (display name), from the test predictions of all rounds pooled: ``ece``, ``reliability``
    (`lib.calibration.reliability_table`) and ``pr_curves`` (`lib.calibration.precision_recall_curves`)."""
    from lib import calibration

    out = {}
    for folder, result in next(iter(all_rounds.values())).items():
        labels, probabilities = pooled_test_predictions(all_rounds, folder)
        out[result.name] = {
            "ece": calibration.expected_calibration_error(labels, probabilities, n_bins),
            "reliability": calibration.reliability_table(labels, probabilities, n_bins),
            "pr_curves": calibration.precision_recall_curves(labels, probabilities, result.class_names),
        }
    return out
