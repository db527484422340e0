"""Minority-class methods: the oversampled stream, mixup's blended batches, logit adjustment, and the choice on
validation."""

import numpy as np
import pandas as pd
import pytest

from lib.core import minority
from lib.core.config import parse_params
from lib.core.minority import METHODS
from lib.data.inputs import Batches

OVERSAMPLE, MIXUP = METHODS["oversample"], METHODS["mixup"]


def test_one_oversampling_procedure_balances_every_epoch_and_holds_only_training_images():
    """The CNN's pixels and MobileNetV2's cached activations are served by the same `Batches`."""
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    rows = np.arange(100, dtype="float32").reshape(1, 100, 1)  # (views, N, 1): value = row number
    stream = Batches(rows, labels, 3, batch_size=32, method=OVERSAMPLE, seed=7)
    epochs = []
    for _ in range(3):
        stream.on_epoch_begin()
        epochs.append([(int(x[0]), int(y.argmax())) for i in range(len(stream)) for x, y in zip(*stream[i])])
    assert all(len(epoch) == 100 for epoch in epochs), "an epoch has as many draws as the split has images"
    drawn = np.array([y for epoch in epochs for _, y in epoch])
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.06)
    assert all(labels[row] == y for epoch in epochs for row, y in epoch), "every image keeps its label"
    assert {row for epoch in epochs for row, y in epoch if y == 2} == {95, 96, 97, 98, 99}
    assert epochs[0] != epochs[1], "each epoch draws afresh"
    again = Batches(rows, labels, 3, batch_size=32, method=OVERSAMPLE, seed=7)
    again.on_epoch_begin()
    assert [(int(x[0]), int(y.argmax())) for i in range(len(again)) for x, y in zip(*again[i])] == epochs[0]


def test_each_method_says_what_it_changes():
    labels = np.array([0] * 8 + [1] * 2)
    weights = METHODS["class_weight"].class_weight(labels, 2)
    assert weights == {0: pytest.approx(10 / 16), 1: pytest.approx(10 / 4)}
    assert METHODS["oversample"].class_weight(labels, 2) is None and METHODS["logit_adjustment"].class_weight(labels, 2) is None
    rng = np.random.default_rng(0)
    assert sorted(METHODS["class_weight"].epoch_rows(labels, 2, rng)) == list(range(10)), "each image once"
    assert [m.name for m in METHODS.values() if m.adjusts_logits] == ["logit_adjustment"]
    assert [m.name for m in METHODS.values() if m.balances_sampling] == ["oversample", "mixup"]
    assert [m.name for m in METHODS.values() if m.mix_alpha] == ["mixup"]
    inputs, targets = np.ones((4, 2)), np.eye(2)[[0, 1, 0, 1]]
    assert all(x is inputs and y is targets for x, y in [OVERSAMPLE.mix_batch(inputs, targets, rng)]), "no mixing"


def test_mixup_batches_blend_images_and_labels_alike_and_over_draw_the_rare_class():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    images = np.eye(3, dtype="float32")[labels][None]  # (views, N, 3): each image is its own one-hot label
    stream = Batches(images, labels, 3, batch_size=20, method=MIXUP, seed=7)
    targets, mixed = [], 0
    for _ in range(3):
        stream.on_epoch_begin()
        for index in range(len(stream)):
            x, y = stream[index]
            np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
            assert (y >= 0).all() and (y <= 1).all()
            # the same weight and the same partner for the image and its label: the blend of the images is
            # the blend of the labels
            np.testing.assert_allclose(x, y, atol=1e-6)
            mixed += int(((y > 1e-3) & (y < 1 - 1e-3)).any(axis=1).sum())
            targets.append(y)
    assert mixed > 100, f"most of the 300 rows blend two classes, {mixed} did"
    shares = np.concatenate(targets).mean(axis=0)
    assert np.allclose(shares, 1 / 3, atol=0.07), f"the rare class (5 % of images) holds a third of the labels: {shares}"
    again = Batches(images, labels, 3, batch_size=20, method=MIXUP, seed=7)
    again.on_epoch_begin()
    np.testing.assert_array_equal(again[0][1], targets[0])
    plain = Batches(images, labels, 3, batch_size=20)  # validation: never mixed
    assert all(set(np.unique(plain[i][1])) == {0.0, 1.0} for i in range(len(plain)))


@pytest.mark.slow
def test_both_models_train_with_mixup_and_the_first_round_compares_it(prepare_experiment):
    from lib.training import experiment as experiments
    from lib.training import recipes

    one_epoch = {"learning_rate": 1e-3, "epochs": 1, "patience": 1}
    methods = {"methods": ["oversample", "mixup"]}
    cnn = prepare_experiment("cnn", cnn={"conv_filters": [4], "dense_units": 8, "training": one_epoch}, minority=methods)
    mobilenet = prepare_experiment("mobilenetv2", minority=methods, mobilenet_v2={
        "weights": None, "dense_units": 8, "head": one_epoch, "fine_tune": one_epoch})
    for experiment, trained in ((cnn, recipes.cnn_by_method(cnn)), (mobilenet, recipes.mobilenet_v2_by_method(mobilenet))):
        assert list(trained) == ["oversample", "mixup"]
        assert trained["mixup"].history["loss"].notna().all()
        np.testing.assert_allclose(trained["mixup"].val_probabilities.sum(axis=1), 1.0, atol=1e-5)
        _, table = experiments.compute_choice(experiment, lambda _: trained)
        assert set(table.loc[table["method"] == "mixup", "split"]) == {"val", "test"}
        assert table["chosen"].sum() == 2  # one method, its validation and test rows


def test_the_training_stream_oversamples_and_validation_is_untouched(prepare_experiment):
    experiment = prepare_experiment("cnn", augmentation=False)
    train_paths = set(experiment.data.train.rows["path"])
    stream = experiment.training_stream(OVERSAMPLE)
    assert isinstance(stream, Batches) and stream.augment is None
    drawn = np.concatenate([np.asarray(y).argmax(axis=1) for _, y in stream])
    assert len(drawn) == len(experiment.data.train)
    counts = np.bincount(experiment.data.train.labels)
    plain = np.concatenate([np.asarray(y).argmax(axis=1) for _, y in experiment.training_stream(METHODS["class_weight"])])
    assert np.array_equal(np.bincount(plain), counts), "without oversampling every image once"
    val = np.concatenate([np.asarray(y).argmax(axis=1) for _, y in experiment.val_ds])
    assert np.array_equal(val, experiment.data.val.labels), "validation: every image once, in order"
    assert not train_paths & set(experiment.data.val.rows["path"]) and not train_paths & set(experiment.data.test.rows["path"])
    assert experiment.class_weight(OVERSAMPLE) is None and experiment.class_weight(METHODS["logit_adjustment"]) is None
    assert experiment.class_weight(METHODS["class_weight"])[int(np.argmin(counts))] > 1.0


def test_logit_adjustment_moves_decisions_towards_rare_classes():
    priors = np.array([0.9, 0.1])
    probabilities = np.array([[0.6, 0.4], [0.95, 0.05]])
    np.testing.assert_allclose(minority.adjust_probabilities(probabilities, priors, 0.0), probabilities)
    adjusted = minority.adjust_probabilities(probabilities, priors, 1.0)
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0)
    # p / prior: 0.6/0.9 < 0.4/0.1, so the first image now goes to the rare class; the second stays
    assert adjusted.argmax(axis=1).tolist() == [1, 0]


def test_tau_is_tuned_on_validation_and_ties_prefer_the_smallest():
    priors = np.array([0.9, 0.1])
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    assert minority.tune_tau(probabilities, labels, priors, [0.0, 0.5, 1.0, 2.0], "macro_f1") == 0.5
    confident = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert minority.tune_tau(confident, labels, priors, [2.0, 0.0, 1.0], "macro_f1") == 0.0


def test_the_method_is_chosen_on_validation_only():
    table = pd.DataFrame([
        {"method": "class_weight", "split": "val", "macro_f1": 0.80},
        {"method": "class_weight", "split": "test", "macro_f1": 0.99},
        {"method": "oversample", "split": "val", "macro_f1": 0.85},
        {"method": "oversample", "split": "test", "macro_f1": 0.50},
        {"method": "logit_adjustment", "split": "val", "macro_f1": 0.85},
    ])
    order = ["class_weight", "oversample", "logit_adjustment"]
    assert minority.best_method(table, "macro_f1", order) == "oversample"  # tie: the earlier one
    with_loss = table.assign(log_loss=[0.30, 0.01, 0.20, 0.01, 0.10])
    assert minority.best_method(with_loss, "macro_f1", order) == "logit_adjustment"  # tie: lower val log-loss
    with_loss.loc[4, "macro_f1"] = 0.84
    assert minority.best_method(with_loss, "macro_f1", order) == "oversample"  # the metric comes first
    scores = minority.scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]), ["a", "b"], "b")
    assert scores["minority_recall"] == 0.5 and scores["minority_precision"] == 0.5 and scores["minority_f1"] == 0.5
    assert scores["minority_images"] == 2


def test_postprocessing_applies_only_to_logit_adjustment():
    params = parse_params({}).minority
    train = np.array([0] * 9 + [1])
    val_labels = np.array([0, 1])
    val_probabilities = np.array([[0.9, 0.1], [0.7, 0.3]])
    plain = minority.fit_postprocessing("class_weight", val_probabilities, val_labels, train, 2, params)
    assert plain.apply(val_probabilities) is val_probabilities and plain.tau == 0.0
    adjusted = minority.fit_postprocessing("logit_adjustment", val_probabilities, val_labels, train, 2, params)
    assert adjusted.tau > 0 and adjusted.apply(val_probabilities).argmax(axis=1).tolist() == [0, 1]
    assert adjusted.to_dict()["priors"] == pytest.approx([0.9, 0.1])


def test_default_tau_is_fixed_at_one_not_fitted_to_the_validation_images():
    train = np.array([0] * 9 + [1])
    val_labels = np.array([0, 0])
    # Adjusting by tau = 1 turns the second (common-class) image into a wrong rare-class guess;
    # tau = 0 would score better on these images, and a tuned grid picks it.
    val_probabilities = np.array([[0.9, 0.1], [0.6, 0.4]])
    default = parse_params({}).minority
    fixed = minority.fit_postprocessing("logit_adjustment", val_probabilities, val_labels, train, 2, default)
    assert default.tau_grid == [1.0] and fixed.tau == 1.0
    assert fixed.apply(val_probabilities).argmax(axis=1).tolist() == [0, 1]
    grid = parse_params({"minority": {"tau_grid": [0.0, 1.0]}}).minority
    tuned = minority.fit_postprocessing("logit_adjustment", val_probabilities, val_labels, train, 2, grid)
    assert tuned.tau == 0.0


def test_a_finished_training_is_reused_only_under_the_same_step_key(prepare_experiment, monkeypatch):
    from lib.training import experiment as experiments
    from lib.training import recipes

    small_cnn = {"conv_filters": [4], "dense_units": 8, "training": {"learning_rate": 1e-3, "epochs": 1, "patience": 1}}
    prepared = prepare_experiment("cnn", cnn=small_cnn, minority={"methods": ["class_weight"]})
    assert experiments.saved_training(prepared, "class_weight") is None  # no key: never reused
    prepared.step_key = "key-1"
    trained = recipes.cnn_by_method(prepared)["class_weight"]
    assert prepared.model_paths.training("class_weight").key.read_text() == "key-1"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished training was trained again")

    monkeypatch.setattr(recipes, "fit_phase", no_training)
    reused = recipes.cnn_by_method(prepared)["class_weight"]
    np.testing.assert_allclose(reused.val_probabilities, trained.val_probabilities, atol=1e-6)
    pd.testing.assert_frame_equal(reused.history, trained.history, check_dtype=False)

    prepared.step_key = "key-2"  # other inputs: trained again
    assert experiments.saved_training(prepared, "class_weight") is None
    experiments.compute_evaluation(prepared, reused)
    assert not (prepared.model_paths.root / "methods").exists(), "a finished step keeps no resume files"


def test_a_method_row_scores_the_post_processed_probabilities_including_their_log_loss():
    labels = np.array([0, 0, 1])
    probabilities = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    row = minority.method_row("class_weight", minority.Postprocessing("class_weight"), "val", probabilities,
                              labels, ["common", "rare"], "rare")
    assert row["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.6, 0.7])))
    assert row["minority_recall"] == 1.0 and row["macro_f1"] == 1.0
    adjusted = minority.Postprocessing("logit_adjustment", tau=1.0, priors=[0.9, 0.1])
    shifted = minority.method_row("logit_adjustment", adjusted, "val", probabilities, labels, ["common", "rare"], "rare")
    assert shifted["log_loss"] != pytest.approx(row["log_loss"])  # scored after the adjustment


def test_the_params_schema_takes_its_names_from_the_registry():
    """One home per fact: the method and selection-metric names the params accept are the registry's."""
    from lib.core.config import MinorityParams
    from lib.core.minority import METRIC_WORDS, SELECTION_METRICS

    fields = MinorityParams.model_json_schema()["properties"]
    assert fields["methods"]["items"]["enum"] == list(METHODS)
    assert fields["selection_metric"]["enum"] == list(SELECTION_METRICS) == list(METRIC_WORDS)
