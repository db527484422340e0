"""The probe check (`lib.analysis.probe_check`): a warning only when the linear probe beats the fine-tuned
MobileNetV2 on validation beyond the paired interval, and words that follow the rounds."""

import numpy as np
import pytest
from made_results import PARAMS, TRUE, checks_of, crippled_validation, one_rare_image_wrong, validation_table
from sklearn.metrics import balanced_accuracy_score, f1_score

from lib.analysis import probe_check
from lib.core.config import parse_params

# The default study's validation split: 263 images, 2 of them Oat-Milk










def test_the_scores_are_the_selection_metrics_as_scikit_learn_computes_them():
    rng = np.random.default_rng(0)
    fine_tuned, probe = (np.where(rng.random(len(TRUE)) < 0.8, TRUE, rng.integers(0, 5, len(TRUE))) for _ in "ab")
    for metric, score in (("macro_f1", lambda p: f1_score(TRUE, p, average="macro")),
                          ("balanced_accuracy", lambda p: balanced_accuracy_score(TRUE, p))):
        row = checks_of(validation_table(fine_tuned, probe), metric=metric).iloc[0]
        assert row["fine_tuned"] == pytest.approx(score(fine_tuned)) and row["probe"] == pytest.approx(score(probe))
        assert row["probe_minus_fine_tuned"] == pytest.approx(row["probe"] - row["fine_tuned"])
        assert row["low"] <= row["probe_minus_fine_tuned"] <= row["high"] and row["images"] == len(TRUE)
    with pytest.raises(ValueError, match="not 'accuracy'"):
        checks_of(validation_table(fine_tuned, probe), metric="accuracy")


def test_a_crippled_fine_tuning_warns_with_its_numbers_and_the_likely_causes():
    checks = checks_of(crippled_validation())
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
    words = probe_check.below_probe_warning(checks_of(crippled_validation(), metric="balanced_accuracy"), quiet)
    assert "augmentation (none in this run" in words and "validation balanced accuracy" in words
    assert "224 × 224 px, compared with the 224 × 224 px" in words


def test_a_fine_tuning_one_validation_image_below_its_probe_is_within_noise():
    checks = checks_of(one_rare_image_wrong())
    row = checks.iloc[0]
    assert row["probe_minus_fine_tuned"] > 0.05, "one of two Oat-Milk images moves macro-F1 by several points"
    assert row["low"] <= 0 < row["high"] and not row["below_probe"]
    assert probe_check.below_probe_warning(checks, PARAMS) is None
    assert probe_check.abstract_words(checks) == ""
    sentence = probe_check.no_warning_sentence(checks)
    assert "it is within noise of the probe in the round" in sentence and "interval" in sentence
    assert f"seed-0: {row['fine_tuned']:.3f} against 1.000" in sentence


def test_identical_predictions_are_within_noise_and_a_clearly_better_fine_tuning_is_above():
    same = checks_of(validation_table(TRUE, TRUE)).iloc[0]
    assert (same["low"], same["high"], same["below_probe"]) == (0.0, 0.0, False)
    above = checks_of(validation_table(TRUE, np.zeros_like(TRUE)), one_rare_image_wrong())
    sentence = probe_check.no_warning_sentence(above)
    assert "above the probe beyond that interval in 1 of 2 rounds and within noise of it in 1 of 2 rounds" in sentence
    assert probe_check.no_warning_sentence(above.iloc[:0]) == "No linear probe was scored."


def test_the_words_follow_the_count_of_rounds():
    one = checks_of(crippled_validation())
    assert probe_check.abstract_words(one).startswith("In its one round, the fine-tuned MobileNetV2 scored below")
    row = one.iloc[0]
    assert (f"(validation macro-F1 {row['fine_tuned']:.3f} against 1.000, a gap of {row['probe_minus_fine_tuned']:.3f} "
            f"with interval {row['low']:.3f}–{row['high']:.3f}): its comparison with the CNN reflects") in \
        probe_check.abstract_words(one)
    some = checks_of(one_rare_image_wrong(), crippled_validation(), validation_table(TRUE, TRUE))
    assert "in 1 of 3 rounds" in probe_check.below_probe_warning(some, PARAMS)
    assert "seed-1" in probe_check.below_probe_warning(some, PARAMS)
    assert "seed-0:" not in probe_check.below_probe_warning(some, PARAMS), "only the rounds beyond noise are named"
    abstract = probe_check.abstract_words(some)
    assert abstract.startswith("In 1 of 3 rounds") and "in seed-1" in abstract and "with the CNN in that round" in abstract
    every = checks_of(crippled_validation(), crippled_validation())
    assert "in every round" in probe_check.below_probe_warning(every, PARAMS)
    assert probe_check.abstract_words(every).startswith("In every round")
    assert "in those rounds" in probe_check.abstract_words(checks_of(crippled_validation(), crippled_validation(), validation_table(TRUE, TRUE)))
    assert "within noise of the probe in every round" in probe_check.no_warning_sentence(
        checks_of(one_rare_image_wrong(), validation_table(TRUE, TRUE)))
