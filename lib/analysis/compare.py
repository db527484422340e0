"""Both models side by side, computed only from the artefacts their notebooks wrote.

One round's results (`load_results`) give the detailed comparison: confusion matrices,
learning curves, paired outcomes. All rounds together (`load_all_rounds`) give the
statistics: means, spreads and bootstrap intervals over rounds, McNemar's test per round,
calibration of the pooled test predictions, and the minority-class method comparison.

The comparison notebook computes all of it once and writes it under the run's ``comparison/``
folder (`compute_comparison`); the report reads it from there (`read_comparison`) and computes
no statistic of its own. The significance rule is stated
once, in `significance_rule`, and applied once, in `verdict`, at the params' levels
(``evaluation.confidence``, ``evaluation.alpha``), which the verdict records for the report's words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib.analysis import calibration, probe_check
from lib.analysis.stats import mcnemar_exact, paired_difference_bootstrap, percent, round_metrics, rounds_bootstrap
from lib.core.paths import RoundPaths, RunPaths
from lib.core.step import StepRun
from lib.core.study import MODELS, PROBE_MODEL, PROBE_NAME, StudyModel
from lib.data.rounds import evaluation_rounds
from lib.training.evaluate import confusion_table


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


def load_results(paths: RoundPaths, models: dict[str, StudyModel] = MODELS) -> dict[str, ModelResults]:
    """Read every model's artefacts in one round, by model name; a missing one names the notebook that writes it."""
    results = {}
    for model in models.values():
        files = paths.model(model.name)
        if not files.metrics.is_file():
            raise FileNotFoundError(f"{files.metrics} is missing: run the {model.title} notebook first")
        results[model.name] = ModelResults(
            name=model.title,
            metrics=json.loads(files.metrics.read_text()),
            history=pd.read_csv(files.history),
            predictions=pd.read_csv(files.predictions, keep_default_na=False),
        )
    return results


def load_probe(paths: RoundPaths) -> ModelResults:
    """The linear probe of one round (`lib.training.probe`), as a model without a training history."""
    files = paths.model(PROBE_MODEL.name)
    if not files.probe_metrics.is_file():
        raise FileNotFoundError(f"{files.probe_metrics} is missing: run the {PROBE_MODEL.title} notebook first")
    metrics = json.loads(files.probe_metrics.read_text())
    return ModelResults(PROBE_NAME, metrics, pd.DataFrame(),
                        pd.read_csv(files.probe_predictions, keep_default_na=False))


def with_probes(all_rounds: dict[str, dict[str, ModelResults]], paths: RunPaths) -> dict[str, dict[str, ModelResults]]:
    """Every round's results with its linear probe added last, as ``probe``: the statistics of each model
    (`per_round_table`, `summary_across_rounds`) give it a row; the paired tests read the first two only."""
    return {name: {**results, "probe": load_probe(paths.round(name))} for name, results in all_rounds.items()}


def probe_checks(all_rounds: dict[str, dict[str, ModelResults]], paths: RunPaths, seed: int,
                 confidence: float) -> pd.DataFrame:
    """Per round: the fine-tuned MobileNetV2 against its linear probe on validation, with the paired interval
    (`lib.analysis.probe_check.check_table`), from rounds that hold a ``probe`` (`with_probes`)."""
    return probe_check.check_table({name: (results["probe"].metrics, probe_check.read_validation(paths.round(name)))
                                    for name, results in all_rounds.items()}, seed, confidence)


def compared_models(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (indexed or with a ``model`` column) without the linear probe's rows: the two models compared."""
    if "model" in table.columns:
        return table[table["model"] != PROBE_NAME]
    return table.drop(index=PROBE_NAME, level="model", errors="ignore")


def trainable_parameters(metrics: dict) -> int:
    """The most parameters a model trains in any phase (MobileNetV2: phase 2, fine-tuning)."""
    return max(v for k, v in metrics["parameters"].items() if k.startswith("trainable"))


OVERFITTING_GAP = "train - val accuracy at kept epoch (points)"  # `overfitting_gap`'s row of `comparison_table`


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
            OVERFITTING_GAP: overfitting_gap(result.history),
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


def confusion_counts(results: dict[str, ModelResults]) -> dict[str, pd.DataFrame]:
    """Each model's confusion matrix (counts), keyed by its display name."""

    return {
        r.name: confusion_table(r.predictions["true_label"], r.predictions["predicted_label"], r.class_names)
        for r in results.values()
    }


def histories(results: dict[str, ModelResults]) -> dict[str, pd.DataFrame]:
    return {r.name: r.history for r in results.values()}


HEADLINE_METRICS = ["accuracy", "balanced accuracy", "macro-F1"]


def intervals(
    results: dict[str, ModelResults], seed: int, confidence: float, n_resamples: int = 2000
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


def load_all_rounds(paths: RunPaths, rounds,
                    models: dict[str, StudyModel] = MODELS) -> dict[str, dict[str, ModelResults]]:
    """Every round's results (`lib.data.rounds.Rounds`), by round name, in the order the rounds ran."""
    return {r.name: load_results(paths.round(r.name), models) for r in rounds}


def _labels(result: ModelResults) -> tuple[np.ndarray, np.ndarray]:
    """A model's test labels as class indices: (true, predicted)."""
    index = {name: i for i, name in enumerate(result.class_names)}
    predictions = result.predictions
    return predictions["true_label"].map(index).to_numpy(), predictions["predicted_label"].map(index).to_numpy()


def metric_names(class_names: list[str]) -> list[str]:
    """The names of `lib.analysis.stats.round_metrics`' entries."""
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
    all_rounds: dict[str, dict[str, ModelResults]], seed: int, confidence: float, n_resamples: int = 2000
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
    all_rounds: dict[str, dict[str, ModelResults]], seed: int, confidence: float, n_resamples: int = 2000
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
    intervals = compared_models(summary).xs(metric, level="metric")
    (low_a, high_a), (low_b, high_b) = intervals[["low", "high"]].to_numpy()[:2]
    return bool(low_a <= high_b and low_b <= high_a)


def rounds_above(tests: pd.DataFrame, alpha: float) -> list[str]:
    """The rounds whose McNemar p-value is above ``alpha``."""
    return [str(name) for name, p in tests["p_value"].items() if float(p) > alpha]


def paired_evidence_favours(tests: pd.DataFrame, difference: pd.DataFrame, alpha: float,
                            metric: str = "macro-F1") -> str | None:
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


def models_differ(summary: pd.DataFrame, tests: pd.DataFrame, alpha: float, metric: str = "macro-F1") -> bool:
    """A significant difference: McNemar's p at most ``alpha`` in every round, and the two models'
    intervals of ``metric`` (averaged over rounds) do not overlap."""
    return not rounds_above(tests, alpha) and not intervals_overlap(summary, metric)


def method_comparison(paths: RunPaths, rounds, models: dict[str, StudyModel] = MODELS) -> pd.DataFrame:
    """The minority-class methods compared in the first round, for every model (empty if none compared)."""
    first = paths.round(rounds.first.name)
    tables = [pd.read_csv(first.model(model.name).methods).assign(model=model.title)
              for model in models.values() if first.model(model.name).methods.is_file()]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def pooled_test_predictions(all_rounds: dict[str, dict[str, ModelResults]], folder: str) -> tuple[np.ndarray, np.ndarray]:
    """One model's test labels (indices) and probabilities, pooled over every round."""
    labels, probabilities = [], []
    for results in all_rounds.values():
        result = results[folder]
        labels.append(_labels(result)[0])
        probabilities.append(result.predictions[[f"p_{n}" for n in result.class_names]].to_numpy())
    return np.concatenate(labels), np.concatenate(probabilities)


def calibration_by_model(all_rounds: dict[str, dict[str, ModelResults]]) -> dict[str, dict]:
    """Per model (display name), from the test predictions of all rounds pooled: ``ece``, ``reliability``
    (`lib.analysis.calibration.reliability_table`) and ``pr_curves`` (`lib.analysis.calibration.precision_recall_curves`)."""

    out = {}
    for folder, result in next(iter(all_rounds.values())).items():
        labels, probabilities = pooled_test_predictions(all_rounds, folder)
        out[result.name] = {
            "ece": calibration.expected_calibration_error(labels, probabilities),
            "reliability": calibration.reliability_table(labels, probabilities),
            "pr_curves": calibration.precision_recall_curves(labels, probabilities, result.class_names),
        }
    return out


# --------------------------------------------------------------------------------------
# The significance rule, and everything the comparison notebook writes for the report
# --------------------------------------------------------------------------------------

def significance_rule(confidence: float, alpha: float) -> str:
    """The study's rule for calling the two models different, in words, at the params' levels."""
    return ("a difference between the models is called significant only when McNemar's exact test on the paired "
            f"test predictions gives p ≤ {alpha:g} in every round and the two models' {percent(confidence)} bootstrap "
            "intervals of the mean macro-F1 do not overlap")


def verdict(summary: pd.DataFrame, tests: pd.DataFrame, difference: pd.DataFrame, confidence: float,
            alpha: float) -> dict:
    """`significance_rule` applied: whether the models differ, each half of the rule on its own, and the levels
    (``summary`` and ``difference`` hold intervals at ``confidence``)."""
    return {
        "rule": significance_rule(confidence, alpha),
        "confidence": confidence,
        "alpha": alpha,
        "significant": models_differ(summary, tests, alpha),
        "rounds_above_alpha": rounds_above(tests, alpha),
        "intervals_overlap": intervals_overlap(summary),
        "paired_evidence_favours": paired_evidence_favours(tests, difference, alpha),
    }


def test_support(all_rounds: dict[str, dict[str, ModelResults]]) -> pd.DataFrame:
    """Test images of each class (columns) in each round (rows)."""
    return pd.DataFrame({name: {c: s["support"] for c, s in next(iter(results.values())).metrics["per_class"].items()}
                         for name, results in all_rounds.items()}).T.rename_axis("round")


def _long(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Tables keyed by model name as one table with a ``model`` column first."""
    return pd.concat([table.assign(model=name) for name, table in tables.items()], ignore_index=True).pipe(
        lambda t: t[["model", *[c for c in t.columns if c != "model"]]])


def _by_model(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {name: rows.drop(columns="model").reset_index(drop=True) for name, rows in table.groupby("model", sort=False)}


@dataclass
class Comparison:
    """Every table and test result of the comparison: computed once by the comparison notebook
    (`compute_comparison`), written under ``comparison/`` and read by the report."""

    per_round: pd.DataFrame  # one row per round and model (and the linear probe): seed, method, test metrics
    summary: pd.DataFrame  # (model, metric): mean, std, bootstrap interval over rounds; the probe last
    difference: pd.DataFrame  # metric: paired difference between the models, with its interval
    mcnemar: pd.DataFrame  # round: McNemar's exact test
    support: pd.DataFrame  # round x class: test images
    methods: pd.DataFrame  # the minority-class methods compared in the first round
    calibration: pd.DataFrame  # model: expected calibration error
    reliability: pd.DataFrame  # model, bins: reliability diagram
    pr_curves: pd.DataFrame  # model, class: precision-recall curves
    first_round: pd.DataFrame  # quantity x model: the first round's test results, size and cost
    per_class_f1: pd.DataFrame  # class x model
    agreement: pd.DataFrame  # the 2 x 2 table of paired outcomes in the first round
    confusion: pd.DataFrame  # model, true, predicted: counts in the first round
    verdict: dict  # `verdict`
    probe_check: pd.DataFrame = field(default_factory=pd.DataFrame)  # round: fine-tuned against probe on validation, paired interval

    @property
    def calibration_by_model(self) -> dict[str, dict]:
        """Per model: ``ece``, ``reliability`` and ``pr_curves``, as `lib.report.plots` draws them."""
        reliability, curves = _by_model(self.reliability), _by_model(self.pr_curves)
        return {name: {"ece": float(ece), "reliability": reliability[name], "pr_curves": curves[name]}
                for name, ece in self.calibration["ece"].items()}

    @property
    def confusion_counts(self) -> dict[str, pd.DataFrame]:
        """Each model's confusion matrix (counts), keyed by its display name."""
        return {name: rows.pivot(index="true", columns="predicted", values="count")
                .reindex(index=list(dict.fromkeys(rows["true"])), columns=list(dict.fromkeys(rows["true"])))
                for name, rows in _by_model(self.confusion).items()}


# How many leading columns of each table's CSV file are its index (0: a plain row number, not written).
_INDEX_COLUMNS = {"per_round": 0, "summary": 2, "difference": 1, "mcnemar": 1, "support": 1, "methods": 0,
                  "calibration": 1, "reliability": 0, "pr_curves": 0, "first_round": 1, "per_class_f1": 1,
                  "agreement": 1, "confusion": 0, "probe_check": 1}


def compute_comparison(run: StepRun) -> Comparison:
    """Every statistic of the study, from the model notebooks' files of every round of the run at ``run.paths``,
    whose params give its rounds, the bootstrap's seed (``seed``) and the levels (``evaluation.confidence``,
    ``evaluation.alpha``); each table written as a CSV file under ``comparison/``, the verdict as JSON."""
    paths, params = run.paths, run.params
    rounds, seed, levels = evaluation_rounds(params.evaluation), params.seed, params.evaluation
    all_rounds = load_all_rounds(paths, rounds)
    first = all_rounds[rounds.first.name]
    probed = with_probes(all_rounds, paths)  # the linear probe as a third row of each model's statistics
    summary, tests = summary_across_rounds(probed, seed, levels.confidence), paired_tests(all_rounds)
    difference = difference_across_rounds(all_rounds, seed, levels.confidence)
    calibration = calibration_by_model(all_rounds)
    confusion = {name: table.rename_axis(index="true", columns="predicted").stack().rename("count").reset_index()
                 for name, table in confusion_counts(first).items()}
    comparison = Comparison(
        per_round=per_round_table(probed), summary=summary, difference=difference, mcnemar=tests,
        support=test_support(all_rounds), methods=method_comparison(paths, rounds),
        calibration=pd.DataFrame({"ece": {name: c["ece"] for name, c in calibration.items()}}).rename_axis("model"),
        reliability=_long({name: c["reliability"] for name, c in calibration.items()}),
        pr_curves=_long({name: c["pr_curves"] for name, c in calibration.items()}),
        first_round=comparison_table(first).rename_axis("quantity"), per_class_f1=per_class_f1(first),
        agreement=agreement_table(first), confusion=_long(confusion),
        verdict=verdict(summary, tests, difference, levels.confidence, levels.alpha),
        probe_check=probe_checks(probed, paths, seed, levels.confidence),
    )
    paths.comparison_dir.mkdir(parents=True, exist_ok=True)
    for name, index_columns in _INDEX_COLUMNS.items():
        getattr(comparison, name).to_csv(paths.comparison_table(name), index=index_columns > 0)
    paths.comparison_verdict.write_text(json.dumps(comparison.verdict, indent=2) + "\n")
    return comparison


def read_comparison(run: StepRun) -> Comparison:
    """What `compute_comparison` returned, from the files it wrote in ``run.paths``; a missing file names the
    notebook that writes it."""
    paths = run.paths
    if not paths.comparison_verdict.is_file():
        raise FileNotFoundError(f"{paths.comparison_verdict} is missing: run the comparison notebook first")
    tables = {}
    for name, index_columns in _INDEX_COLUMNS.items():
        try:
            table = pd.read_csv(paths.comparison_table(name), keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:  # e.g. no minority-class methods compared
            table = pd.DataFrame()
        tables[name] = table.set_index(list(table.columns[:index_columns])) if index_columns and len(table.columns) else table
    first, second = [model.title for model in MODELS.values()][:2]  # `agreement_table`'s rows and columns
    tables["agreement"] = tables["agreement"].rename_axis(index=first, columns=second)
    return Comparison(**tables, verdict=json.loads(paths.comparison_verdict.read_text()))
