"""Training phases: the optimiser, step-size schedule and loss a phase's params ask for."""

import keras
import numpy as np
import pytest

from lib.core.config import PhaseParams
from lib.data.inputs import Batches
from lib.training.train import fit_phase, learning_rate_schedule, optimizer


def rates(schedule, steps):
    return np.array([float(schedule(step)) if callable(schedule) else schedule for step in steps])


def test_the_original_phase_is_adam_at_a_constant_step_size():
    phase = PhaseParams(learning_rate=1e-3, epochs=5, patience=2)
    assert learning_rate_schedule(phase, steps_per_epoch=10) == 1e-3
    assert type(optimizer(phase, 10)) is keras.optimizers.Adam


def test_warm_up_rises_linearly_then_the_cosine_decays_to_zero_at_the_end_of_the_budget():
    phase = PhaseParams(learning_rate=1e-3, epochs=10, patience=2, schedule="cosine", warmup_epochs=2)
    schedule = learning_rate_schedule(phase, steps_per_epoch=5)  # 10 warm-up steps of 50
    np.testing.assert_allclose(rates(schedule, [0, 5, 10]), [0.0, 5e-4, 1e-3], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(rates(schedule, [30, 50]), [5e-4, 0.0], rtol=1e-4, atol=1e-9)  # half-way, then the end
    assert np.all(np.diff(rates(schedule, range(10, 51))) <= 1e-12)  # never rises after the warm-up


def test_a_warm_up_without_cosine_holds_the_rate_after_it():
    phase = PhaseParams(learning_rate=2e-4, epochs=4, patience=2, warmup_epochs=1)
    np.testing.assert_allclose(rates(learning_rate_schedule(phase, 4), [0, 2, 4, 9, 15]),
                               [0.0, 1e-4, 2e-4, 2e-4, 2e-4], rtol=1e-5, atol=1e-9)


def test_a_cosine_without_warm_up_starts_at_the_step_size():
    phase = PhaseParams(learning_rate=1e-3, epochs=2, patience=2, schedule="cosine")
    np.testing.assert_allclose(rates(learning_rate_schedule(phase, 3), [0, 3, 6]), [1e-3, 5e-4, 0.0], rtol=1e-4,
                               atol=1e-9)


def test_weight_decay_makes_the_optimiser_adamw_and_label_smoothing_reaches_the_loss():
    phase = PhaseParams(learning_rate=1e-2, epochs=2, patience=2, weight_decay=0.01, label_smoothing=0.2)
    adamw = optimizer(phase, 10)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(0.01)

    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(16, 3)).astype("float32"), rng.integers(0, 2, 16)
    y = np.eye(2, dtype="float32")[labels]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    batches = Batches(x[None], labels, n_classes=2, batch_size=16)
    history = fit_phase(model, batches, batches, phase, name="p", class_weight=None, verbose=0)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    # with smoothing the loss of a prediction equal to its (smoothed) target is its entropy, not 0: check it is used
    smoothed = y * 0.8 + 0.1
    expected = -(smoothed * np.log(model.predict(x, verbose=0))).sum(axis=1).mean()
    assert history["val_loss"].iloc[-1] == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_the_strong_protocol_fine_tunes_the_whole_base_and_keeps_its_batchnorm_statistics(prepare_experiment):
    from lib.training import recipes

    two_epochs = {"epochs": 2, "warmup_epochs": 1, "patience": 2}
    experiment = prepare_experiment("mobilenetv2", minority={"methods": ["class_weight"]}, training={
        "batch_size": 4, "precision": "float32"}, mobilenet_v2={
        "protocol": "strong", "weights": None, "dense_units": 8, "augmented_views": 1,
        "head": {"learning_rate": 1e-3, "epochs": 1, "patience": 1}, "fine_tune": two_epochs})
    trained = recipes.mobilenet_v2_by_method(experiment)
    model, inputs = trained["class_weight"].model, trained["class_weight"].inputs
    base = next(layer for layer in model.layers if layer.name.startswith("mobilenetv2"))
    assert list(trained["class_weight"].history["phase"]) == ["head", "fine-tune", "fine-tune"]
    changed = {weight.path: not np.array_equal(weight.numpy(), before)
               for weight, before in zip(base.weights, inputs.frozen_weights)}
    convolutions = [path for path in changed if path.endswith("kernel")]
    statistics = [path for path in changed if "moving_" in path]
    assert convolutions and statistics
    assert all(changed[path] for path in convolutions), "every convolution of the base was fine-tuned"
    assert not any(changed[path] for path in statistics), "BatchNorm stayed in inference mode"
    assert trained["class_weight"].parameters["unfrozen_layers"] > 100


def test_a_model_the_study_does_not_have_is_named_before_any_work(tiny_params_file):
    from lib.core.config import load_params
    from lib.core.paths import run_paths
    from lib.core.step import StepRun
    from lib.training.experiment import prepare

    with pytest.raises(ValueError, match="unknown model 'resnet': the study's models are cnn, mobilenetv2"):
        prepare(StepRun(params := load_params(tiny_params_file), run_paths(params)), "resnet")
