"""Training over several devices (`lib.core.devices.data_parallel`), on two CPU devices: JAX's host platform split
in two (``--xla_force_host_platform_device_count``), TensorFlow's CPU as two logical devices.

Each backend runs in its own interpreter, since Keras fixes its backend, and both engines their
devices, when they start.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import NO_AUGMENTATION, write_first_round_split, write_params

from lib.core.config import load_params
from lib.core.paths import PROJECT_ROOT

TRAIN_TWICE = """
import json, sys
import numpy as np
if sys.argv[2] == "tensorflow":  # before anything starts TensorFlow's devices
    import tensorflow as tf
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
from lib.core import devices
from lib.training import experiment, recipes


def model_replicas(model) -> int:  # over how many devices the variables are laid out (JAX sharding, TF strategy)
    import keras

    if keras.backend.backend() == "jax":
        return len(model.weights[0].value.sharding.device_set)
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.num_replicas_in_sync if strategy is not None else 1


report = {}
for model_name, train in (("cnn", recipes.cnn_by_method), ("mobilenetv2", lambda e: recipes.mobilenet_v2_by_method(e)[0])):
    runs = []
    for attempt in range(2):
        study = experiment.prepare(sys.argv[1], model_name)
        trained = train(study)["class_weight"]
        metrics, predictions = experiment.evaluate_and_save(study, trained)
        runs.append(predictions.filter(like="p_").to_numpy())
    report[model_name] = {
        "devices": study.devices.to_dict(),
        "model_replicas": model_replicas(trained.model),
        "history_rows": len(trained.history),
        "runtime": metrics["runtime"],
        "identical_reruns": bool(np.array_equal(runs[0], runs[1])),
        "outside_block": devices.active_replicas(),
    }
print("REPORT " + json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_training_over_two_devices_runs_distributed_and_gives_a_valid_reproducible_model(
    backend, tmp_path, tiny_params, monkeypatch
):
    from lib.training.models import load_trained_model

    params = tiny_params | {
        "training": {"batch_size": 8, "precision": "float32"},  # 21 training images: the last batch is short
        "minority": {"methods": ["class_weight"]},
        "augmentation": NO_AUGMENTATION,
        "cnn": {"conv_filters": [8], "dense_units": 16, "training": {"epochs": 2}},
        "mobilenet_v2": {"weights": None, "head": {"epochs": 1}, "fine_tune": {"epochs": 1}},
    }
    params_file = write_params(tmp_path / "two_devices.yaml", params)
    write_first_round_split(load_params(params_file))
    environment = {"KERAS_BACKEND": backend, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                   "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    finished = subprocess.run([sys.executable, "-c", TRAIN_TWICE, str(params_file), backend],
                              capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(finished.stdout.split("REPORT ", 1)[1])

    round_dir = tmp_path / "reports" / "tiny" / "rounds" / "seed-42"
    for model_name, seen in report.items():
        assert seen["devices"]["count"] == 2 and seen["devices"]["replicas"] == 2
        assert seen["devices"]["description"].endswith("as 2 host devices")
        assert seen["model_replicas"] == 2, "the model's variables live on both devices"
        assert seen["runtime"]["replicas"] == 2 and seen["runtime"]["backend"] == backend
        assert seen["outside_block"] == 1
        assert seen["identical_reruns"], "same seed, same devices: the same predictions"
        # a valid model: saved, it loads on one device and predicts the test images as recorded
        folder = round_dir / model_name
        predictions = pd.read_csv(folder / "predictions.csv")
        probabilities = predictions.filter(like="p_").to_numpy()
        assert np.isfinite(probabilities).all()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        history = pd.read_csv(folder / "history.csv")
        assert np.isfinite(history[["loss", "val_loss"]].to_numpy()).all()
        assert len(history) == seen["history_rows"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["runtime"]["replicas"] == 2
    from lib.data.inputs import decode_images

    cnn = round_dir / "cnn"
    predictions = pd.read_csv(cnn / "predictions.csv")
    if backend == "tensorflow":  # this process's backend: the saved model reloads on one device
        model = load_trained_model(cnn / "model.keras")
        images = decode_images(predictions["path"], (32, 32)).astype("float32")
        np.testing.assert_allclose(model.predict(images, verbose=0), predictions.filter(like="p_").to_numpy(),
                                   atol=1e-5)
