import numpy as np
import pandas as pd
import pytest

from lib import compare, report


def _results(correct_a, correct_b, n_classes=3):
    true = np.array([f"c{i % n_classes}" for i in range(len(correct_a))])
    wrong = np.array([f"c{(i + 1) % n_classes}" for i in range(len(correct_a))])
    results = {}
    for key, name, correct in (("a", "Model A", correct_a), ("b", "Model B", correct_b)):
        predictions = pd.DataFrame({"relpath": [f"{i}.jpg" for i in range(len(true))], "true_label": true,
                                    "predicted_label": np.where(correct, true, wrong)})
        results[key] = compare.ModelResults(name, {"class_names": sorted(set(true))}, pd.DataFrame(), predictions)
    return results


def test_a_clear_difference_is_called_significant():
    a = np.ones(200, dtype=bool)
    b = np.r_[np.ones(120, dtype=bool), np.zeros(80, dtype=bool)]
    results = _results(a, b)
    test = compare.paired_test(results)
    assert (test["first"], test["second"], test["only_a"], test["only_b"]) == ("Model A", "Model B", 80, 0)
    ci = compare.intervals(results, seed=0, n_resamples=300)
    assert ci.loc["Model A", "accuracy"] == 1.0 and ci.loc["Model B", "accuracy"] == pytest.approx(0.6)
    assert ci.loc["Model B", "accuracy low"] < 0.6 < ci.loc["Model B", "accuracy high"]
    assert compare.difference_is_significant(test, ci)
    assert "is significant at the 5 % level" in report.significance_html(test, ci)


def test_a_small_difference_is_not_significant():
    a = np.r_[np.ones(40, dtype=bool), np.zeros(10, dtype=bool)]
    b = np.r_[np.ones(38, dtype=bool), np.zeros(12, dtype=bool)]
    results = _results(a, b)
    test, ci = compare.paired_test(results), compare.intervals(results, seed=0, n_resamples=300)
    assert test["p_value"] > 0.05
    assert not compare.difference_is_significant(test, ci)
    assert "is not significant at the 5 % level" in report.significance_html(test, ci)


def test_predictions_on_different_images_do_not_pair():
    results = _results(np.ones(6, dtype=bool), np.ones(6, dtype=bool))
    results["b"].predictions["relpath"] = [f"other{i}.jpg" for i in range(6)]
    with pytest.raises(ValueError, match="tested on different images"):
        compare.correctness(results)


def test_interval_table_puts_value_and_bounds_in_one_cell():
    ci = pd.DataFrame({"accuracy": [0.9], "accuracy low": [0.85], "accuracy high": [0.95]}, index=["Model A"])
    assert report.interval_table(ci).loc["Model A", "accuracy"] == "0.900 [0.850, 0.950]"


def test_formatted_rows():
    table = pd.DataFrame({"A": [1.0, 1234567.0], "B": [0.25, 12.0]}, index=["F1", "total parameters"])
    shown = report.formatted(table, count_rows=("total parameters",))
    assert shown.loc["F1"].tolist() == ["1.000", "0.250"]
    assert shown.loc["total parameters"].tolist() == ["1,234,567", "12"]
