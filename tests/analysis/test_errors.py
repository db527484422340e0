"""The test images worth looking at (`lib.analysis.errors`), on two models' hand-made predictions."""

import numpy as np
import pandas as pd
import pytest

from lib.analysis import errors

CLASSES = ["a", "b", "rare"]


def predictions(rows: list[tuple[str, str, list[float]]]) -> pd.DataFrame:
    """A predictions table as `lib.training.evaluate.predictions_table` writes it: (relpath, true label, probabilities)."""
    table = pd.DataFrame({
        "path": [f"/data/{relpath}" for relpath, _, _ in rows],
        "relpath": [relpath for relpath, _, _ in rows],
        "true_label": [label for _, label, _ in rows],
        "predicted_label": [CLASSES[int(np.argmax(p))] for _, _, p in rows],
    })
    for index, name in enumerate(CLASSES):
        table[f"p_{name}"] = [p[index] for _, _, p in rows]
    return table


CNN = predictions([
    ("a1", "a", [0.9, 0.1, 0.0]),    # both right
    ("a2", "a", [0.6, 0.4, 0.0]),    # both right, less sure
    ("a3", "a", [0.2, 0.8, 0.0]),    # CNN wrong only
    ("b1", "b", [0.1, 0.9, 0.0]),    # both right
    ("b2", "b", [0.7, 0.3, 0.0]),    # both wrong
    ("b3", "b", [0.0, 0.6, 0.4]),    # MobileNet wrong only
    ("r1", "rare", [0.5, 0.0, 0.5]),  # both wrong (a tie goes to the first class, as argmax does)
    ("r2", "rare", [0.1, 0.0, 0.9]),  # MobileNet wrong only
])
MOBILENET = predictions([
    ("b3", "b", [0.0, 0.3, 0.7]),  # the rows in another order: tables pair by relpath
    ("a1", "a", [0.8, 0.2, 0.0]),
    ("a2", "a", [0.99, 0.01, 0.0]),
    ("a3", "a", [0.7, 0.3, 0.0]),
    ("b1", "b", [0.3, 0.7, 0.0]),
    ("b2", "b", [0.0, 0.0, 1.0]),
    ("r1", "rare", [0.6, 0.3, 0.1]),
    ("r2", "rare", [0.0, 1.0, 0.0]),
])
BOTH = {"CNN": CNN, "MobileNetV2": MOBILENET}


def test_explanation_examples_pick_the_same_images_for_both_models_rare_class_first():
    examples = errors.explanation_examples(BOTH, CLASSES, rare_class="rare")
    assert examples[["class", "example", "relpath"]].values.tolist() == [
        ["rare", "correct", "r2"],  # the CNN's only right rare image
        ["rare", "wrong", "r1"],    # both models wrong beats one
        ["a", "correct", "a1"],     # both right, mean p(true) 0.85 beats a2's 0.795
        ["a", "wrong", "a3"],
        ["b", "correct", "b1"],     # both right beats b3 (one right)
        ["b", "wrong", "b2"],       # both wrong beats b3 (one wrong)
    ]
    first = examples.iloc[0]
    assert (first["CNN predicted"], first["CNN probability"], first["CNN correct"]) == ("rare", 0.9, True)
    assert (first["MobileNetV2 predicted"], first["MobileNetV2 probability"]) == ("b", 1.0)
    assert first["path"] == "/data/r2" and first["true_label"] == "rare"


def test_explanation_examples_are_deterministic_and_skip_a_missing_wrong_example():
    right_everywhere = {name: table[table["relpath"].isin(["a1", "a2", "b1"])] for name, table in BOTH.items()}
    examples = errors.explanation_examples(right_everywhere, CLASSES)
    assert examples[["class", "example", "relpath"]].values.tolist() == [["a", "correct", "a1"],
                                                                         ["b", "correct", "b1"]]
    shuffled = {name: table.sample(frac=1, random_state=1) for name, table in BOTH.items()}
    pd.testing.assert_frame_equal(errors.explanation_examples(shuffled, CLASSES, "rare"),
                                  errors.explanation_examples(BOTH, CLASSES, "rare"))
    one_rare = {name: table[table["relpath"].isin(["a1", "r2"])] for name, table in BOTH.items()}
    assert errors.explanation_examples(one_rare, CLASSES, "rare")[["class", "example", "relpath"]].values.tolist() \
        == [["rare", "correct", "r2"], ["a", "correct", "a1"]]  # r2 is not shown twice (it is wrong for one model)
    with pytest.raises(ValueError, match="the rare class 'rare' has no test image"):
        errors.explanation_examples(right_everywhere, CLASSES, rare_class="rare")


def test_top_losses_rank_each_models_worst_images_with_both_predictions():
    losses = errors.top_losses(BOTH, k=2)
    # CNN p(true): a1 .9 a2 .6 a3 .2 b1 .9 b2 .3 b3 .6 r1 .5 r2 .9 -> a3 (1.61), b2 (1.20)
    # MobileNetV2 p(true): b2 0.0 and r2 0.0, both clipped to 1e-15 (the tie goes to the first relpath)
    assert losses[["model", "rank", "relpath"]].values.tolist() == [
        ["CNN", 1, "a3"], ["CNN", 2, "b2"], ["MobileNetV2", 1, "b2"], ["MobileNetV2", 2, "r2"],
    ]
    np.testing.assert_allclose(losses["loss"], [-np.log(0.2), -np.log(0.3), -np.log(1e-15), -np.log(1e-15)])
    row = losses.iloc[0]
    assert (row["CNN predicted"], row["MobileNetV2 predicted"], row["MobileNetV2 probability"]) == ("b", "a", 0.7)
    with pytest.raises(ValueError, match="k must be a positive int"):
        errors.top_losses(BOTH, k=0)


def test_most_confused_counts_off_diagonal_pairs_most_frequent_first():
    table = predictions([
        ("1", "a", [0.1, 0.9, 0.0]), ("2", "a", [0.1, 0.9, 0.0]), ("3", "b", [0.9, 0.1, 0.0]),
        ("4", "rare", [0.0, 0.9, 0.1]), ("5", "a", [0.9, 0.1, 0.0]), ("6", "rare", [0.1, 0.1, 0.8]),
    ])
    assert errors.most_confused(table).values.tolist() == [["a", "b", 2], ["b", "a", 1], ["rare", "b", 1]]
    assert errors.most_confused(table, min_count=2).values.tolist() == [["a", "b", 2]]
    assert errors.most_confused(table, min_count=3).empty


def test_discordant_images_are_the_pairs_mcnemars_test_counts():
    discordant = errors.discordant_images(BOTH)
    assert discordant[["right", "relpath"]].values.tolist() == [
        ["CNN", "b3"], ["CNN", "r2"], ["MobileNetV2", "a3"],
    ]
    from lib.analysis.stats import mcnemar_exact

    paired = errors.side_by_side(BOTH)
    counts = mcnemar_exact(paired["CNN correct"], paired["MobileNetV2 correct"])
    assert (counts["only_a"], counts["only_b"]) == (2, 1)
    assert discordant.loc[2, "MobileNetV2 predicted"] == "a" and discordant.loc[2, "CNN predicted"] == "b"


def test_tables_that_do_not_pair_up_are_refused():
    with pytest.raises(ValueError, match="not on the same test images"):
        errors.side_by_side({"CNN": CNN, "MobileNetV2": MOBILENET.iloc[1:]})
    relabelled = MOBILENET.assign(true_label=MOBILENET["true_label"].replace({"rare": "a"}))
    with pytest.raises(ValueError, match="not on the same test images with the same true labels"):
        errors.side_by_side({"CNN": CNN, "MobileNetV2": relabelled})
    with pytest.raises(ValueError, match=r"lack the columns \['p_rare'\]"):
        errors.side_by_side({"CNN": CNN.drop(columns="p_rare")})
    with pytest.raises(ValueError, match="exactly two models"):
        errors.discordant_images({"CNN": CNN})
