import numpy as np
import pandas as pd
import pytest

from lib.training import evaluate, train

NAMES = ["apple", "juice", "oat"]
Y_TRUE = np.array([0, 0, 1, 1, 2])
# arg-max predictions: apple, juice, juice, juice, apple
PROBABILITIES = np.array(
    [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3]]
)


def test_metrics_on_a_worked_example():
    metrics = evaluate.classification_metrics(Y_TRUE, PROBABILITIES, NAMES)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    # F1: apple p=1/2 r=1/2 -> 0.5; juice p=2/3 r=1 -> 0.8; oat never predicted -> 0
    assert metrics["per_class"]["juice"]["f1"] == pytest.approx(0.8)
    assert metrics["per_class"]["oat"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert metrics["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 0) / 5)
    expected_loss = -np.mean(np.log([0.8, 0.3, 0.8, 0.7, 0.3]))
    assert metrics["loss"] == pytest.approx(expected_loss)
    table = evaluate.per_class_table(metrics)
    assert table.loc["apple", "support"] == 2 and list(table.columns) == ["precision", "recall", "f1", "support"]


def test_confusion_tables_count_and_normalise_by_true_class():
    true = np.array(NAMES)[Y_TRUE]
    predicted = np.array(NAMES)[PROBABILITIES.argmax(axis=1)]
    counts = evaluate.confusion_table(true, predicted, NAMES)
    assert counts.loc["apple"].tolist() == [1, 1, 0]
    assert counts.loc["oat"].tolist() == [1, 0, 0]
    normalised = evaluate.confusion_table(true, predicted, NAMES, normalize=True)
    assert normalised.loc["apple"].tolist() == [0.5, 0.5, 0.0]
    assert np.allclose(normalised.sum(axis=1), 1.0)


def test_predictions_table_has_one_probability_column_per_class():
    rows = pd.DataFrame({"path": [f"/d/{i}.jpg" for i in range(5)], "relpath": [f"{i}.jpg" for i in range(5)]})
    table = evaluate.predictions_table(rows, Y_TRUE, PROBABILITIES, NAMES)
    assert list(table.columns) == ["path", "relpath", "true_label", "predicted_label", "p_apple", "p_juice", "p_oat"]
    assert table["predicted_label"].tolist() == ["apple", "juice", "juice", "juice", "apple"]
    np.testing.assert_allclose(table[["p_apple", "p_juice", "p_oat"]].to_numpy(), PROBABILITIES)


def _phase(name, val_losses):
    n = len(val_losses)
    history = pd.DataFrame({"epoch": range(1, n + 1), "phase": name, "loss": 1.0, "accuracy": 0.9,
                            "val_loss": val_losses, "val_accuracy": 0.8, "seconds": 2.0})
    history["best"] = history.index == history["val_loss"].idxmin()
    return history


def test_phases_combine_into_one_running_epoch_axis():
    combined = train.combine_phases(_phase("head", [0.9, 0.5, 0.6]), _phase("fine-tune", [0.45, 0.4]))
    assert combined["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert combined["epoch_in_phase"].tolist() == [1, 2, 3, 1, 2]
    assert combined.loc[combined["best"], "epoch"].tolist() == [5]
    summary = train.training_summary(combined)
    assert summary["epochs_run"] == {"head": 3, "fine-tune": 2}
    assert summary["best_epoch"] == 5 and summary["best_val_loss"] == 0.4
    assert summary["training_seconds"] == 10.0
