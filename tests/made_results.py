"""Made-up statistics for the comparison and the probe check: rounds of paired results and validation tables."""

import numpy as np
import pandas as pd

from lib.analysis import compare, probe_check
from lib.core.config import parse_params

CONFIDENCE, ALPHA = parse_params({}).evaluation.confidence, parse_params({}).evaluation.alpha


def paired_results(correct_a, correct_b, n_classes=3):
    true = np.array([f"c{i % n_classes}" for i in range(len(correct_a))])
    wrong = np.array([f"c{(i + 1) % n_classes}" for i in range(len(correct_a))])
    results = {}
    for key, name, correct in (("a", "Model A", correct_a), ("b", "Model B", correct_b)):
        predictions = pd.DataFrame({"relpath": [f"{i}.jpg" for i in range(len(true))], "true_label": true,
                                    "predicted_label": np.where(correct, true, wrong)})
        results[key] = compare.ModelResults(name, {"class_names": sorted(set(true))}, pd.DataFrame(), predictions)
    return results


def rounds_of(*pairs):
    """``{round: results}`` from (correct_a, correct_b) per round, with seeds and methods in the metrics."""
    rounds = {}
    for number, (a, b) in enumerate(pairs):
        results = paired_results(a, b)
        for r in results.values():
            r.metrics.update({"seed": number, "minority_method": "class_weight"})
        rounds[f"seed-{number}"] = results
    return rounds


def comparison_of(rounds, summary=None, tests=None, **verdict_changes) -> compare.Comparison:
    """The statistics part of a `compare.Comparison` of ``rounds`` (tables given replace those computed), its
    verdict from `compare.verdict` with ``verdict_changes`` laid over it; the rest empty."""
    if summary is None:
        summary = compare.summary_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=300)
    tests = compare.paired_tests(rounds) if tests is None else tests
    difference = compare.difference_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=300)
    empty = {name: pd.DataFrame() for name in ("per_round", "support", "methods", "calibration", "reliability",
                                               "pr_curves", "first_round", "per_class_f1", "agreement", "confusion")}
    return compare.Comparison(summary=summary, mcnemar=tests, difference=difference, **empty,
                              verdict=compare.verdict(summary, tests, difference, CONFIDENCE, ALPHA) | verdict_changes)


NAMES = ["Apple", "Juice", "Yoghurt", "Milk", "Oat-Milk"]


TRUE = np.r_[np.repeat(np.arange(4), [81, 70, 55, 55]), [4, 4]]


PARAMS = parse_params({"data": {"image_size": [64, 64]}})


def validation_table(fine_tuned: np.ndarray, probe: np.ndarray, true: np.ndarray = TRUE) -> pd.DataFrame:
    """A `lib.training.probe.validation_table` of class indices."""
    names = np.array(NAMES, dtype=object)
    return pd.DataFrame({"relpath": [f"{i}.jpg" for i in range(len(true))], "true_label": names[true],
                         "fine_tuned": names[fine_tuned], "probe": names[probe]})


def checks_of(*validations, metric="macro_f1") -> pd.DataFrame:
    """A `probe_check.check_table` of rounds seed-0, seed-1, ... from their validation tables."""
    metrics = {"validation": {"metric": metric}, "class_names": NAMES}
    return probe_check.check_table({f"seed-{i}": (metrics, v) for i, v in enumerate(validations)}, seed=0,
                                   confidence=parse_params({}).evaluation.confidence, n_resamples=500)


def one_rare_image_wrong() -> pd.DataFrame:
    """The fine-tuned model one validation image below its probe: an Oat-Milk image called Milk."""
    fine_tuned = TRUE.copy()
    fine_tuned[-1] = 3
    return validation_table(fine_tuned, TRUE)


def crippled_validation() -> pd.DataFrame:
    """A fine-tuned model that calls everything Apple, against a probe right on every image."""
    return validation_table(np.zeros_like(TRUE), TRUE)
