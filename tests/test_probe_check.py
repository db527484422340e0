"""The probe check (`lib.analysis.probe_check`): a warning only when the linear probe beats the fine-tuned
MobileNetV2 on validation beyond the paired interval, and words that follow the rounds."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from lib.analysis import probe_check
from lib.core.config import parse_params

NAMES = ["Apple", "Juice", "Yoghurt", "Milk", "Oat-Milk"]
# The default study's validation split: 263 images, 2 of them Oat-Milk
TRUE = np.r_[np.repeat(np.arange(4), [81, 70, 55, 55]), [4, 4]]
PARAMS = parse_params({"data": {"image_size": [64, 64]}})


def _validation(fine_tuned: np.ndarray, probe: np.ndarray, true: np.ndarray = TRUE) -> pd.DataFrame:
    """A `lib.training.probe.validation_table` of class indices."""
    names = np.array(NAMES, dtype=object)
    return pd.DataFrame({"relpath": [f"{i}.jpg" for i in range(len(true))], "true_label": names[true],
                         "fine_tuned": names[fine_tuned], "probe": names[probe]})


def _checks(*validations, metric="macro_f1") -> pd.DataFrame:
    """A `probe_check.check_table` of rounds seed-0, seed-1, ... from their validation tables."""
    metrics = {"validation": {"metric": metric}, "class_names": NAMES}
    return probe_check.check_table({f"seed-{i}": (metrics, v) for i, v in enumerate(validations)}, seed=0,
                                   confidence=parse_params({}).evaluation.confidence, n_resamples=500)


def _one_rare_image_wrong() -> pd.DataFrame:
    """The fine-tuned model one validation image below its probe: an Oat-Milk image called Milk."""
    fine_tuned = TRUE.copy()
    fine_tuned[-1] = 3
    return _validation(fine_tuned, TRUE)


def _crippled() -> pd.DataFrame:
    """A fine-tuned model that calls everything Apple, against a probe right on every image."""
    return _validation(np.zeros_like(TRUE), TRUE)


def test_the_scores_are_the_selection_metrics_as_scikit_learn_computes_them():
    rng = np.random.default_rng(0)
    fine_tuned, probe = (np.where(rng.random(len(TRUE)) < 0.8, TRUE, rng.integers(0, 5, len(TRUE))) for _ in "ab")
    for metric, score in (("macro_f1", lambda p: f1_score(TRUE, p, average="macro")),
                          ("balanced_accuracy", lambda p: balanced_accuracy_score(TRUE, p))):
        row = _checks(_validation(fine_tuned, probe), metric=metric).iloc[0]
        assert row["fine_tuned"] == pytest.approx(score(fine_tuned)) and row["probe"] == pytest.approx(score(probe))
        assert row["probe_minus_fine_tuned"] == pytest.approx(row["probe"] - row["fine_tuned"])
        assert row["low"] <= row["probe_minus_fine_tuned"] <= row["high"] and row["images"] == len(TRUE)
    with pytest.raises(ValueError, match="not 'accuracy'"):
        _checks(_validation(fine_tuned, probe), metric="accuracy")


def test_a_crippled_fine_tuning_warns_with_its_numbers_and_the_likely_causes():
    checks = _checks(_crippled())
    row = checks.iloc[0]
    assert bool(row["below_probe"]) and row["low"] > 0
    warning = probe_check.below_probe_warning(checks, PARAMS)
    assert warning.startswith("Warning: the fine-tuned MobileNetV2 scores below a linear probe on its own frozen "
                              "ImageNet features on the validation split in the round, beyond the paired 95 %")
    assert f"seed-0: {row['fine_tuned']:.3f} against 1.000, probe − fine-tuned +" in warning and "on 263 images" in warning
    assert "augmentation that the frozen features cannot follow" in warning
    assert "learning rates (head 0.001" in warning and "64 × 64 px, far from the 224 × 224 px" in warning
    quiet = parse_params({"augmentation": {"rotation_degrees": 0, "width_shift": 0, "height_shift": 0, "shear": 0,
                                           "zoom": 0, "horizontal_flip": False}})
    words = probe_check.below_probe_warning(_checks(_crippled(), metric="balanced_accuracy"), quiet)
    assert "augmentation (none in this run" in words and "validation balanced accuracy" in words
    assert "224 × 224 px, compared with the 224 × 224 px" in words


def test_a_fine_tuning_one_validation_image_below_its_probe_is_within_noise():
    checks = _checks(_one_rare_image_wrong())
    row = checks.iloc[0]
    assert row["probe_minus_fine_tuned"] > 0.05, "one of two Oat-Milk images moves macro-F1 by several points"
    assert row["low"] <= 0 < row["high"] and not row["below_probe"]
    assert probe_check.below_probe_warning(checks, PARAMS) is None
    assert probe_check.abstract_words(checks) == ""
    sentence = probe_check.no_warning_sentence(checks)
    assert "it is within noise of the probe in the round" in sentence and "interval" in sentence
    assert f"seed-0: {row['fine_tuned']:.3f} against 1.000" in sentence


def test_identical_predictions_are_within_noise_and_a_clearly_better_fine_tuning_is_above():
    same = _checks(_validation(TRUE, TRUE)).iloc[0]
    assert (same["low"], same["high"], same["below_probe"]) == (0.0, 0.0, False)
    above = _checks(_validation(TRUE, np.zeros_like(TRUE)), _one_rare_image_wrong())
    sentence = probe_check.no_warning_sentence(above)
    assert "above the probe beyond that interval in 1 of 2 rounds and within noise of it in 1 of 2 rounds" in sentence
    assert probe_check.no_warning_sentence(above.iloc[:0]) == "No linear probe was scored."


def test_the_words_follow_the_count_of_rounds():
    one = _checks(_crippled())
    assert probe_check.abstract_words(one).startswith("In its one round, the fine-tuned MobileNetV2 scored below")
    row = one.iloc[0]
    assert (f"(validation macro-F1 {row['fine_tuned']:.3f} against 1.000, a gap of {row['probe_minus_fine_tuned']:.3f} "
            f"with interval {row['low']:.3f}–{row['high']:.3f}): its comparison with the CNN reflects") in \
        probe_check.abstract_words(one)
    some = _checks(_one_rare_image_wrong(), _crippled(), _validation(TRUE, TRUE))
    assert "in 1 of 3 rounds" in probe_check.below_probe_warning(some, PARAMS)
    assert "seed-1" in probe_check.below_probe_warning(some, PARAMS)
    assert "seed-0:" not in probe_check.below_probe_warning(some, PARAMS), "only the rounds beyond noise are named"
    abstract = probe_check.abstract_words(some)
    assert abstract.startswith("In 1 of 3 rounds") and "in seed-1" in abstract and "with the CNN in that round" in abstract
    every = _checks(_crippled(), _crippled())
    assert "in every round" in probe_check.below_probe_warning(every, PARAMS)
    assert probe_check.abstract_words(every).startswith("In every round")
    assert "in those rounds" in probe_check.abstract_words(_checks(_crippled(), _crippled(), _validation(TRUE, TRUE)))
    assert "within noise of the probe in every round" in probe_check.no_warning_sentence(
        _checks(_one_rare_image_wrong(), _validation(TRUE, TRUE)))
