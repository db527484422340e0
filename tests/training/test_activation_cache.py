"""The activation cache trains the same layers on the same numbers as the plain path; `Batches` serves it."""

import keras
import numpy as np
import pytest

from lib.core.minority import METHODS
from lib.data.inputs import Batches
from lib.training import activation_cache, models, recipes
from lib.training.train import fit_phase

CLASS_WEIGHT, OVERSAMPLE = METHODS["class_weight"], METHODS["oversample"]

MOBILENET = {"weights": None, "dense_units": 8,
             "head": {"learning_rate": 1e-3, "epochs": 3, "patience": 3},
             "fine_tune": {"learning_rate": 1e-4, "epochs": 2, "patience": 3}}


@pytest.fixture(scope="module")
def base():
    return models.mobilenet_v2_base((32, 32), None)


@pytest.mark.parametrize("n_top", [20, 19, 17])
def test_the_cut_is_one_tensor_at_or_below_the_fine_tuned_layers(base, n_top):
    cut = activation_cache.frozen_boundary(base, n_top)
    # the last 20 layers start a residual block (block_15); inside it two tensors cross any cut
    assert cut == len(base.layers) - 20
    assert base.layers[cut].name == "block_15_expand"


def test_bottom_then_top_is_the_base(base):
    bottom, top = activation_cache.split_base(base, 20)
    pixels = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(top.predict(bottom.predict(pixels, verbose=0), verbose=0), base.predict(pixels, verbose=0))
    assert all(layer is base.get_layer(layer.name) for layer in top.layers[1:])  # shared, not copied
    assert activation_cache.split_base(base, 0) == (base, None)


def test_cached_views_cycle_one_view_per_epoch_through_fit():
    views, count = 3, 10
    inputs = np.stack([np.full((count, 2), view, dtype="float32") for view in range(views)])
    served = []  # the view of every batch that fit asked for

    class Recorded(Batches):
        def __getitem__(self, index):
            batch = super().__getitem__(index)
            served.append((float(batch[0][0, 0]), len(batch[1])))
            return batch

    stream = Recorded(inputs, np.arange(count) % 2, 2, batch_size=4, method=CLASS_WEIGHT, seed=0)
    per_epoch = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            per_epoch.append(sorted(set(served)))
            served.clear()

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    model.fit(stream, epochs=5, verbose=0, callbacks=[Record()])
    # three batches (4 + 4 + 2 images: each image once) per epoch, all from view epoch mod 3
    assert [{view for view, _ in epoch} for epoch in per_epoch] == [{0.0}, {1.0}, {2.0}, {0.0}, {1.0}]
    assert all(sorted(size for _, size in epoch) == [2, 4] for epoch in per_epoch)


@pytest.mark.slow
def test_cached_phases_match_the_model_on_pixels_and_train_its_own_layers(prepare_experiment):
    experiment = prepare_experiment("mobilenetv2", mobilenet_v2=MOBILENET | {"augmented_views": 2})
    model, base = models.build_mobilenet_v2(experiment.n_classes, (32, 32), experiment.params.mobilenet_v2)
    cache = activation_cache.phase_inputs(experiment.round_inputs(), experiment.params.mobilenet_v2, model, base)
    assert isinstance(cache, activation_cache.ActivationCache)
    n_train = len(experiment.data.train)
    assert cache.train["pooled"].shape == (2, n_train, 1280)
    assert cache.train["below_top"].shape[:2] == (2, n_train)
    assert not np.array_equal(cache.train["pooled"][0], cache.train["pooled"][1])  # two different augmentations
    assert cache.val["pooled"].shape[0] == 1

    # validation images are not augmented: the cached path computes exactly what the model does on pixels
    on_pixels = model.predict(experiment.data.val.images.astype("float32"), verbose=0)
    head = cache.head_phase(CLASS_WEIGHT)
    np.testing.assert_allclose(head.model.predict(cache.val["pooled"][0], verbose=0), on_pixels, atol=1e-5)

    dense_before = model.get_layer("dense").get_weights()[0].copy()
    fit_phase(head.model, head.train, head.val, experiment.params.mobilenet_v2.head, name="head",
              class_weight=experiment.class_weight(CLASS_WEIGHT), verbose=0)
    assert not np.array_equal(model.get_layer("dense").get_weights()[0], dense_before)

    unfrozen = models.unfreeze_top(base, 20)
    tune = cache.fine_tune_phase(CLASS_WEIGHT)
    on_pixels = model.predict(experiment.data.val.images.astype("float32"), verbose=0)
    np.testing.assert_allclose(tune.model.predict(cache.val["below_top"][0], verbose=0), on_pixels, atol=1e-5)
    conv_before = base.get_layer("Conv_1").get_weights()[0].copy()
    fit_phase(tune.model, tune.train, tune.val, experiment.params.mobilenet_v2.fine_tune, name="fine-tune",
              class_weight=experiment.class_weight(CLASS_WEIGHT), verbose=0)
    assert "Conv_1" in unfrozen
    assert not np.array_equal(base.get_layer("Conv_1").get_weights()[0], conv_before)
    assert cache.summary()["augmented_views"] == 2 and cache.summary()["cut_below_layer"] == "block_15_expand"

    # another model (new random weights: MOBILENET has none) reuses the cache exactly
    other, other_base = models.build_mobilenet_v2(experiment.n_classes, (32, 32), experiment.params.mobilenet_v2)
    bound = cache.bind(other, other_base)
    models.unfreeze_top(other_base, 20)
    np.testing.assert_allclose(bound.fine_tune_phase(OVERSAMPLE).model.predict(cache.val["below_top"][0], verbose=0),
                               other.predict(experiment.data.val.images.astype("float32"), verbose=0), atol=1e-5)


def test_the_plain_path_trains_the_whole_model_on_pixels(prepare_experiment):
    experiment = prepare_experiment("mobilenetv2", augmentation=False,
                                    mobilenet_v2=MOBILENET | {"activation_cache": False})
    model, base = models.build_mobilenet_v2(experiment.n_classes, (32, 32), experiment.params.mobilenet_v2)
    inputs = activation_cache.phase_inputs(experiment.round_inputs(), experiment.params.mobilenet_v2, model, base)
    assert inputs.summary() == {"activation_cache": False}
    phase = inputs.head_phase(CLASS_WEIGHT)
    assert phase.model is model and phase.val is experiment.val_ds
    images, targets = next(iter(phase.train))
    assert images.shape[1:] == (32, 32, 3) and targets.shape[1] == experiment.n_classes


def test_without_augmentation_one_view_is_cached(prepare_experiment):
    experiment = prepare_experiment("mobilenetv2", augmentation=False, mobilenet_v2=MOBILENET | {"fine_tune_layers": 0})
    model, base = models.build_mobilenet_v2(experiment.n_classes, (32, 32), experiment.params.mobilenet_v2)
    cache = activation_cache.phase_inputs(experiment.round_inputs(), experiment.params.mobilenet_v2, model, base)
    assert cache.views == 1 and cache.top is None
    assert cache.fine_tune_phase(CLASS_WEIGHT).model.input_shape == (None, 1280)


def test_oversampled_batches_draw_every_class_equally_often_from_every_view():
    labels = np.array([0] * 90 + [1] * 10)
    inputs = np.stack([np.arange(100.0)[:, None], 1000 + np.arange(100.0)[:, None]])  # (views, N, 1)
    views = Batches(inputs, labels, 2, batch_size=25, method=OVERSAMPLE, seed=3)
    drawn, used_views = [], set()
    for _ in range(20):
        views.on_epoch_begin()
        for index in range(len(views)):
            x, y = views[index]
            drawn.append(y.argmax(axis=1))
            used_views |= set((x[:, 0] >= 1000).tolist())
    drawn = np.concatenate(drawn)
    assert len(drawn) == 20 * 100
    assert abs(drawn.mean() - 0.5) < 0.05, "class 1 (10 % of the images) is half of the draws"
    assert used_views == {True, False}, "repeats come from both augmented views"
    with pytest.raises(ValueError, match="needs the minority-class method"):
        Batches(inputs, labels, 2, batch_size=25, seed=3)


@pytest.mark.slow
def test_mobilenet_v2_trainings_of_an_interrupted_step_are_reused(prepare_experiment, monkeypatch):
    one_epoch = {"learning_rate": 1e-3, "epochs": 1, "patience": 1}
    experiment = prepare_experiment("mobilenetv2", mobilenet_v2=MOBILENET | {"head": one_epoch, "fine_tune": one_epoch},
                                    minority={"methods": ["oversample"]})
    experiment.step_key = "key-1"
    trained = recipes.mobilenet_v2_by_method(experiment)
    inputs = trained["oversample"].inputs

    def no_training(*args, **kwargs):
        raise AssertionError("a finished training was trained again")

    monkeypatch.setattr(recipes, "fit_phase", no_training)
    again = recipes.mobilenet_v2_by_method(experiment)
    reused = again["oversample"].inputs
    assert reused.summary() == inputs.summary() and reused.summary()["activation_cache"]
    np.testing.assert_allclose(again["oversample"].val_probabilities, trained["oversample"].val_probabilities, atol=1e-6)


def test_a_whole_base_fine_tune_caches_the_pooled_features_only_and_trains_phase_2_on_pixels(prepare_experiment):
    experiment = prepare_experiment("mobilenetv2", mobilenet_v2=MOBILENET | {"fine_tune_layers": "all"})
    model, base = models.build_mobilenet_v2(experiment.n_classes, (32, 32), experiment.params.mobilenet_v2)
    cache = activation_cache.phase_inputs(experiment.round_inputs(), experiment.params.mobilenet_v2, model, base)
    assert set(cache.train) == set(cache.val) == {"pooled", "labels"}  # no pixel-sized copy of the images
    val_pixels = experiment.data.val.images.astype("float32")
    np.testing.assert_allclose(cache.head_phase(CLASS_WEIGHT).model.predict(cache.val["pooled"][0], verbose=0),
                               model.predict(val_pixels, verbose=0), atol=1e-5)

    unfrozen = models.unfreeze_top(base, "all")
    assert "Conv1" in unfrozen and "block_1_expand" in unfrozen
    assert not any(isinstance(base.get_layer(name), keras.layers.BatchNormalization) for name in unfrozen)
    tune = cache.fine_tune_phase(CLASS_WEIGHT)
    assert tune.model is model and tune.val is experiment.val_ds
    images, _ = tune.train[0]
    assert images.shape[1:] == (32, 32, 3)
    assert cache.summary()["cut_below_layer"].startswith("none: the whole base trains")

    # phase 2 changes the base's weights; the next method's model is still given the base the cache was made with
    kernel = base.get_layer("Conv1").kernel
    kernel.assign(kernel + 1.0)
    other, other_base = models.build_mobilenet_v2(experiment.n_classes, (32, 32), experiment.params.mobilenet_v2)
    bound = cache.bind(other, other_base)
    np.testing.assert_allclose(bound.head_phase(OVERSAMPLE).model.predict(cache.val["pooled"][0], verbose=0),
                               other.predict(val_pixels, verbose=0), atol=1e-5)
