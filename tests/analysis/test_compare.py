import numpy as np
import pandas as pd
import pytest
from made_results import ALPHA, CONFIDENCE, comparison_of, paired_results, rounds_of

from lib.analysis import compare
from lib.core.config import parse_params
from lib.report import document, tables
from lib.report import sections as report

# The params' levels, as a run without them in its params file reads them








def test_a_clear_difference_is_called_significant():
    a = np.ones(200, dtype=bool)
    b = np.r_[np.ones(120, dtype=bool), np.zeros(80, dtype=bool)]
    rounds = rounds_of((a, b), (a, np.roll(b, 7)))
    tests = compare.paired_tests(rounds)
    assert tests[["first", "second", "only_a", "only_b"]].values.tolist() == [["Model A", "Model B", 80, 0]] * 2
    summary = compare.summary_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=300)
    assert summary.loc[("Model A", "accuracy"), "mean"] == 1.0
    assert summary.loc[("Model B", "accuracy"), "mean"] == pytest.approx(0.6)
    assert summary.loc[("Model B", "accuracy"), "low"] < 0.6 < summary.loc[("Model B", "accuracy"), "high"]
    comparison = comparison_of(rounds, summary, tests)
    assert comparison.verdict["significant"] and compare.models_differ(summary, tests, ALPHA)
    assert "is significant at the 5 % level" in report.statistics_html(comparison, "holdout")
    assert compare.significance_rule(CONFIDENCE, ALPHA) in report.statistics_html(comparison, "holdout")
    assert "the difference is significant" in report.conclusion_html(comparison)

    # Same McNemar tests, but intervals made to overlap: not significant, and the words say why.
    widened = summary.copy()
    widened.loc[("Model B", "macro-F1"), "high"] = 1.0
    assert compare.intervals_overlap(widened) and not compare.models_differ(widened, tests, ALPHA)
    words = report.statistics_html(comparison_of(rounds, widened, tests), "holdout")
    assert "is not significant at the 5 % level (McNemar's test finds the two models' errors different" in words


def test_a_small_difference_is_not_significant():
    a = np.r_[np.ones(40, dtype=bool), np.zeros(10, dtype=bool)]
    b = np.r_[np.ones(38, dtype=bool), np.zeros(12, dtype=bool)]
    rounds = rounds_of((a, b), (b, a))
    tests = compare.paired_tests(rounds)
    summary = compare.summary_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=300)
    assert (tests["p_value"].astype(float) > 0.05).all()
    comparison = comparison_of(rounds, summary, tests)
    assert not comparison.verdict["significant"]
    assert "is not significant at the 5 % level" in report.statistics_html(comparison, "holdout")
    assert "McNemar's p is above 0.05 in seed-0, seed-1" in report.statistics_html(comparison, "holdout")
    assert "but the difference is not significant" in report.conclusion_html(comparison)


def test_one_round_with_a_large_p_value_makes_the_difference_not_significant():
    a = np.ones(200, dtype=bool)
    clear = np.r_[np.ones(120, dtype=bool), np.zeros(80, dtype=bool)]
    close = np.r_[np.ones(198, dtype=bool), np.zeros(2, dtype=bool)]
    rounds = rounds_of((a, clear), (a, close))
    summary = compare.summary_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=200)
    assert not compare.models_differ(summary, compare.paired_tests(rounds), ALPHA)


def test_summary_mean_and_std_are_over_rounds():
    a = np.r_[np.ones(30, dtype=bool), np.zeros(10, dtype=bool)]   # accuracy 0.75
    b = np.r_[np.ones(20, dtype=bool), np.zeros(20, dtype=bool)]   # accuracy 0.5
    rounds = rounds_of((a, a), (b, b))
    summary = compare.summary_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=200)
    row = summary.loc[("Model A", "accuracy")]
    assert row["mean"] == pytest.approx(0.625) and row["std"] == pytest.approx(np.std([0.75, 0.5], ddof=1))
    assert row["rounds"] == 2
    per_round = compare.per_round_table(rounds)
    assert per_round.loc[per_round["model"] == "Model A", "accuracy"].tolist() == [0.75, 0.5]
    cell = tables.statistics_table(summary).loc["accuracy", "Model A"]
    assert cell.startswith("0.625 ± 0.177 [")


def test_predictions_on_different_images_do_not_pair():
    results = paired_results(np.ones(6, dtype=bool), np.ones(6, dtype=bool))
    results["b"].predictions["relpath"] = [f"other{i}.jpg" for i in range(6)]
    with pytest.raises(ValueError, match="tested on different images"):
        compare.correctness(results)


def test_formatted_rows():
    table = pd.DataFrame({"A": [1.0, 1234567.0], "B": [0.25, 12.0]}, index=["F1", "total parameters"])
    shown = document.formatted(table, count_rows=("total parameters",))
    assert shown.loc["F1"].tolist() == ["1.000", "0.250"]
    assert shown.loc["total parameters"].tolist() == ["1,234,567", "12"]


def test_one_rounds_intervals_bracket_scikit_learns_metrics():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(5)
    results = paired_results(rng.random(150) < 0.9, rng.random(150) < 0.6)
    table = compare.intervals(results, seed=0, confidence=CONFIDENCE, n_resamples=300)
    assert list(table.index) == ["Model A", "Model B"]
    for r in results.values():
        true, predicted = r.predictions["true_label"], r.predictions["predicted_label"]
        expected = {"accuracy": accuracy_score(true, predicted),
                    "balanced accuracy": balanced_accuracy_score(true, predicted),
                    "macro-F1": f1_score(true, predicted, average="macro")}
        for name, value in expected.items():
            row = table.loc[r.name]
            assert row[name] == pytest.approx(value)
            assert row[f"{name} low"] < value < row[f"{name} high"]
    assert table.loc["Model A", "accuracy low"] > table.loc["Model B", "accuracy high"]


def test_difference_across_rounds_is_second_minus_first_with_a_paired_interval():
    a = np.r_[np.ones(30, dtype=bool), np.zeros(10, dtype=bool)]   # accuracy 0.75
    b = np.r_[np.ones(36, dtype=bool), np.zeros(4, dtype=bool)]    # accuracy 0.9, right wherever a is
    rounds = rounds_of((a, b), (a, b))
    difference = compare.difference_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=300)
    row = difference.loc["accuracy"]
    assert (row["first"], row["second"]) == ("Model A", "Model B")
    assert row["difference"] == pytest.approx(0.15) and 0 < row["low"] <= 0.15 <= row["high"]
    assert list(difference.index) == compare.metric_names(rounds["seed-0"]["a"].class_names)
    summary = compare.summary_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=300)
    table = tables.difference_table(difference, CONFIDENCE)
    assert list(table.columns) == ["Model B − Model A", "95 % low", "95 % high"]
    assert table.loc["accuracy", "Model B − Model A"] == pytest.approx(0.15)
    words = report.statistics_html(comparison_of(rounds, summary), "holdout")
    # B's errors are a subset of A's, so no resample can favour A: the interval lies above 0.
    assert difference.loc["macro-F1", "low"] > 0
    assert "difference in macro-F1 (Model B minus Model A" in words and "it excludes 0." in words
    # Not significant by the rule (say the intervals overlapped), yet every test favours B: the conclusion says so.
    tests = compare.paired_tests(rounds).assign(p_value=0.01)
    overlapping = {"significant": False, "intervals_overlap": True}
    concluded = report.conclusion_html(comparison_of(rounds, summary, tests, **overlapping))
    assert "but the difference is not significant by this study's rule" in concluded
    assert "both favour Model B" in concluded
    against = tests.assign(only_a=10, only_b=0)  # McNemar's discordant images point the other way
    assert "favour" not in report.conclusion_html(comparison_of(rounds, summary, against, **overlapping))
    same = compare.difference_across_rounds(rounds_of((a, a)), seed=0, confidence=CONFIDENCE, n_resamples=100)
    assert "it includes 0." in report.difference_sentence(same)
    rounds["seed-1"]["b"].predictions["relpath"] = "other-" + rounds["seed-1"]["b"].predictions["relpath"]
    with pytest.raises(ValueError, match="do not pair up"):
        compare.difference_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=50)


def test_the_levels_are_the_params_and_the_words_follow_them():
    """``evaluation.confidence`` and ``evaluation.alpha`` set the intervals, the test and every word that names them."""
    a = np.r_[np.ones(40, dtype=bool), np.zeros(10, dtype=bool)]
    b = np.r_[np.ones(38, dtype=bool), np.zeros(12, dtype=bool)]
    rounds = rounds_of((a, b), (b, a))
    levels = parse_params({"evaluation": {"confidence": 0.8, "alpha": 0.01}}).evaluation
    wide = compare.summary_across_rounds(rounds, seed=0, confidence=0.99, n_resamples=300)
    narrow = compare.summary_across_rounds(rounds, seed=0, confidence=levels.confidence, n_resamples=300)
    assert (narrow["high"] - narrow["low"] <= wide["high"] - wide["low"]).all()
    tests, difference = compare.paired_tests(rounds), compare.difference_across_rounds(rounds, 0, levels.confidence)
    verdict = compare.verdict(narrow, tests, difference, levels.confidence, levels.alpha)
    assert (verdict["confidence"], verdict["alpha"]) == (0.8, 0.01)
    assert "p ≤ 0.01 in every round" in verdict["rule"] and "80 % bootstrap intervals" in verdict["rule"]
    comparison = comparison_of(rounds, narrow, tests, **{k: verdict[k] for k in ("confidence", "alpha", "rule")})
    words = report.statistics_html(comparison, "holdout")
    assert "not significant at the 1 % level" in words and "McNemar's p is above 0.01 in" in words
    assert "with a 80 % percentile bootstrap interval" in words and "95 %" not in words
    assert list(tables.difference_table(difference, levels.confidence).columns)[1:] == ["80 % low", "80 % high"]
