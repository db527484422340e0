"""Training over several devices (`lib.core.devices.data_parallel`), on two CPU devices: JAX's host platform split
in two (``--xla_force_host_platform_device_count``), TensorFlow's CPU as two logical devices.

Each backend runs in its own interpreter, since Keras fixes its backend, and both engines their
devices, when they start.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import NO_AUGMENTATION, write_first_round_split, write_params

from lib.core.config import load_params
from lib.core.paths import PROJECT_ROOT
from lib.core.tracking_store import Store, default_uri

TRAIN_TWICE = """
import json, sys
import numpy as np
if sys.argv[2] == "tensorflow":  # before anything starts TensorFlow's devices
    import tensorflow as tf
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
from lib.core import devices
from lib.core.config import load_params
from lib.core.paths import run_paths
from lib.core.step import StepRun
from lib.training import experiment, recipes


def model_replicas(model) -> int:  # over how many devices the variables are laid out (JAX sharding, TF strategy)
    import keras

    if keras.backend.backend() == "jax":
        return len(model.weights[0].value.sharding.device_set)
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.num_replicas_in_sync if strategy is not None else 1


report, params = {}, load_params(sys.argv[1])
for model_name, train in (("cnn", recipes.cnn_by_method), ("mobilenetv2", recipes.mobilenet_v2_by_method)):
    runs = []
    for attempt in range(2):
        study = experiment.prepare(StepRun(params, run_paths(params)), model_name)
        trained = train(study)["class_weight"]
        metrics, predictions = experiment.compute_evaluation(study, trained)
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
    from lib.data.pixels import decode_images

    cnn = round_dir / "cnn"
    predictions = pd.read_csv(cnn / "predictions.csv")
    if backend == "tensorflow":  # this process's backend: the saved model reloads on one device
        model = load_trained_model(cnn / "model.keras")
        images = decode_images(predictions["path"], (32, 32)).astype("float32")
        np.testing.assert_allclose(model.predict(images, verbose=0), predictions.filter(like="p_").to_numpy(),
                                   atol=1e-5)


# Across processes (`lib.core.distribution`): each process one CPU device, JAX's collectives through gloo on localhost.
TRAIN_ACROSS_PROCESSES = """
import json, os, sys
import numpy as np
from lib.core import distribution
where = distribution.coordinates()  # from KERAS_DISTRIBUTION_*; None: one process
if where is not None:
    distribution.initialize(where, timeout_seconds=int(sys.argv[1]), heartbeat_seconds=int(sys.argv[1]))
    if where.index == int(sys.argv[2]):
        os._exit(9)  # this process dies once it has joined
import keras
from lib.core.config import AugmentationParams
from lib.core.devices import data_parallel, visible_devices
from lib.data import augmentation, inputs, pixels
from lib.core.minority import METHODS
rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(32, 16, 16, 3), dtype=np.uint8)
data = pixels.SplitData(images, np.arange(32) % 3, None)
augmenter = augmentation.build_augmentation(AugmentationParams(), seed=0)
shard = (0, 1) if where is None else (where.index, where.processes)
keras.utils.set_random_seed(7)
devices = visible_devices()
with data_parallel(devices, 8):
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(inputs.training_stream(data, 3, 8, METHODS["class_weight"], 1, augmenter, shard=shard), epochs=3, verbose=0)
alone = keras.models.clone_model(model)  # the trained weights (replicated on every process), on one device
alone.set_weights(model.get_weights())
print("REPORT " + json.dumps({"devices": devices.count, "predictions": alone.predict(images.astype("float32"), verbose=0).tolist()}))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _start(index: int | None, port: int, timeout: int = 120, dies: int = -1, processes: int = 2):
    """One training process (index None: alone, on two host devices), its output piped."""
    import os

    environment = os.environ | {"KERAS_BACKEND": "jax", "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if index is None:
        environment["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    else:
        environment |= {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{port}",
                        "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes), "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}
    return subprocess.Popen([sys.executable, "-c", TRAIN_ACROSS_PROCESSES, str(timeout), str(dies)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=PROJECT_ROOT)


def _report(process) -> dict:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.split("REPORT ", 1)[1])


@pytest.mark.slow
def test_two_processes_train_as_two_devices_in_one_process_do():
    port = _free_port()
    alone, first, second = _start(None, port), _start(0, port), _start(1, port)
    expected = _report(alone)
    assert expected["devices"] == 2
    for process in (first, second):
        seen = _report(process)
        assert seen["devices"] == 2, "DataParallel spans both processes' devices"
        np.testing.assert_array_equal(np.array(seen["predictions"]), np.array(expected["predictions"]))


@pytest.mark.slow
def test_a_process_that_dies_ends_the_others_with_a_message_naming_it():
    port = _free_port()
    first, second = _start(0, port, timeout=10, dies=1), _start(1, port, timeout=10, dies=1)
    assert second.wait(timeout=300) == 9
    _, stderr = first.communicate(timeout=300)  # JAX's coordination service: heartbeats missed, the run ends
    assert first.returncode != 0
    assert "another task died" in stderr and "stopped sending heartbeats" in stderr


@pytest.mark.slow
def test_an_unreachable_coordinator_or_a_missing_process_is_named():
    port = _free_port()
    alone_second = _start(1, port, timeout=5)  # no process 0 serves the coordinator
    _, stderr = alone_second.communicate(timeout=300)
    assert alone_second.returncode == 1
    assert f"process 1 of 2 cannot reach the coordinator localhost:{port} within 5 s" in stderr
    alone_first = _start(0, port, timeout=5)  # process 1 never comes: JAX ends process 0, in its own words
    _, stderr = alone_first.communicate(timeout=300)
    assert alone_first.returncode != 0
    assert "Terminating process because the JAX distributed service detected fatal errors" in stderr
    assert "RegisterTask" in stderr


def test_coordinates_come_from_arguments_or_keras_variables_and_must_be_complete():
    from lib.core.distribution import Coordinates, DistributionError, coordinates

    assert coordinates(environ={}) is None, "no coordinates: one process"
    keras_variables = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "node0:1234,node1:2345",
                       "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"}
    assert coordinates(environ=keras_variables) == Coordinates("node0:1234", 2, 1)
    assert coordinates("node9:99", 4, 3, environ=keras_variables) == Coordinates("node9:99", 4, 3)
    assert Coordinates("node0:1234", 2, 1).environment() == {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": "node0:1234", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
        "KERAS_DISTRIBUTION_PROCESS_ID": "1"}
    with pytest.raises(DistributionError, match="missing: --process-id / KERAS_DISTRIBUTION_PROCESS_ID"):
        coordinates("node0:1234", 2, environ={})
    with pytest.raises(DistributionError, match="must be HOST:PORT"):
        coordinates("node0", 2, 0, environ={})
    with pytest.raises(DistributionError, match="must be 0 .. 1 for 2 processes, got 2"):
        coordinates("node0:1", 2, 2, environ={})
    with pytest.raises(DistributionError, match="must be integers"):
        coordinates(environ=keras_variables | {"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"})


# The whole study across processes (`lib.run --coordinator ... --num-processes ... --process-id ...`), on JAX.
def _study(params_file, environment: dict, *arguments: str):
    """``python -m lib.run params_file arguments`` in its own process, its output piped."""
    import os

    variables = {name: value for name, value in os.environ.items() if not name.startswith(("XLA_", "KERAS_"))}
    return subprocess.Popen([sys.executable, "-m", "lib.run", str(params_file), *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT,
                            env=variables | {"PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"} | environment)


def _finished(process, timeout: int = 1500) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _assert_the_run_names_jax(run: Path) -> None:
    """``training.backend: jax`` from a runner whose own Keras runs TensorFlow (no ``KERAS_BACKEND``): every kernel
    got JAX, and the report's methods table (both models) and appendix name backend, version and device."""
    import jax
    import keras

    for model in ("cnn", "mobilenetv2"):
        runtime = json.loads((run / "rounds" / "seed-42" / model / "metrics.json").read_text())["runtime"]
        assert runtime["backend"] == "jax" and runtime["backend_version"] == jax.__version__
        assert runtime["keras_version"] == keras.version() and runtime["deterministic"] is True
    html = (run / "report.html").read_text()
    assert html.count(f"JAX {jax.__version__} (Keras {keras.version()}) on {runtime['description']}") >= 3
    assert "training.backend: jax" in html


@pytest.mark.slow
def test_the_study_across_two_processes_gives_the_predictions_of_two_devices_in_one_process(tmp_path, tiny_params):
    values = tiny_params | {"evaluation": {"seeds": [42]},
                            "training": {"backend": "jax", "batch_size": 8, "precision": "float32"},
                            "minority": {"methods": ["class_weight", "mixup"]},
                            "cnn": {"training": {"epochs": 2}},
                            "mobilenet_v2": {"head": {"epochs": 1}, "fine_tune": {"epochs": 1}}}
    alone = write_params(tmp_path / "alone.yaml", values | {"reports_dir": str(tmp_path / "alone")})
    together = write_params(tmp_path / "together.yaml", values | {"reports_dir": str(tmp_path / "together")})
    port = _free_port()
    coordinates = ["--coordinator", f"localhost:{port}", "--num-processes", "2"]
    first = _study(together, {}, *coordinates, "--process-id", "0")
    second = _study(together, {}, *coordinates, "--process-id", "1")
    _finished(_study(alone, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}))
    assert "process 1 of 2" in _finished(second)
    assert "process 0 of 2" in _finished(first)

    published, reference = tmp_path / "together" / "tiny", tmp_path / "alone" / "tiny"
    for model in ("cnn", "mobilenetv2"):
        folder = published / "rounds" / "seed-42" / model
        runtime = json.loads((folder / "metrics.json").read_text())["runtime"]
        assert runtime["replicas"] == 2 and runtime["backend"] == "jax", "trained over both processes' devices"
        for name in ("predictions.csv", "methods.csv") + (("probe_predictions.csv",) if model == "mobilenetv2" else ()):
            pd.testing.assert_frame_equal(pd.read_csv(folder / name),
                                          pd.read_csv(reference / "rounds" / "seed-42" / model / name))
    assert (tmp_path / "together" / "report.html").is_file(), "process 0 publishes"
    _assert_the_run_names_jax(reference)
    # Process 1 ran the audit and the model steps (what their training reads) in its own folder, published nothing
    own = tmp_path / "together" / ".processes" / "tiny-1"
    assert list(json.loads((own / "steps.json").read_text())) == [
        "01_data_audit.ipynb", "rounds/seed-42/02_cnn.ipynb", "rounds/seed-42/03_mobilenetv2.ipynb"]
    assert not (own / "comparison").exists() and not (own / "report.html").exists()
    assert sorted(p.name for p in (tmp_path / "together").iterdir()) == [
        ".locks", ".processes", ".runs", "mlartifacts", "mlruns.db", "mlruns.db.lock", "report.html", "report.pdf",
        "tiny"]  # the store's locks and versions, the MLflow store
    # process 0 alone logs the run to MLflow: one parent run, a child per training
    store = Store(default_uri(tmp_path / "together"), "product-image-study")
    runs = store.search("")
    assert [r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["tiny"]
    trained = sum(pd.read_csv(published / "rounds" / "seed-42" / model / "methods.csv")["method"].nunique()
                  for model in ("cnn", "mobilenetv2"))
    assert len(runs) == 1 + trained, "each training logged once, by process 0"


def test_a_run_across_processes_needs_jax_and_one_step_at_a_time(tmp_path, tiny_params, capsys):
    from lib import run

    coordinates = ["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "0"]
    tensorflow = write_params(tmp_path / "tf.yaml", tiny_params | {"training": {"backend": "tensorflow"}})
    assert run.main([str(tensorflow), *coordinates]) == 2
    assert "training across 2 processes runs on JAX here; Keras runs 'tensorflow'" in capsys.readouterr().err
    jax = write_params(tmp_path / "jax.yaml", tiny_params | {"training": {"backend": "jax"}})
    assert run.main([str(jax), *coordinates, "--jobs", "2"]) == 2
    assert "--jobs runs steps side by side on one machine" in capsys.readouterr().err
    assert run.main([str(jax), "--coordinator", "localhost:1", "--num-processes", "2"]) == 2
    assert "missing: --process-id / KERAS_DISTRIBUTION_PROCESS_ID" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists(), "nothing ran"


@pytest.mark.slow
def test_a_killed_second_process_stops_the_run_and_the_last_report_survives(tmp_path, tiny_params):
    import psutil

    values = tiny_params | {"evaluation": {"seeds": [42]}, "minority": {"methods": ["class_weight"]},
                            "training": {"backend": "jax", "batch_size": 8, "precision": "float32"},
                            "cnn": {"training": {"epochs": 1000, "patience": 1000}}}
    params_file = write_params(tmp_path / "params.yaml", values)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "report.html").write_text("the last good report")
    coordinates = ["--coordinator", f"localhost:{_free_port()}", "--num-processes", "2"]
    first = _study(params_file, {}, *coordinates, "--process-id", "0")
    second = _study(params_file, {}, *coordinates, "--process-id", "1")
    first_output = []  # read as it comes, so that process 0 never waits on a full pipe
    reader = threading.Thread(target=lambda: first_output.extend(first.stdout), daemon=True)
    reader.start()
    threading.Thread(target=second.communicate, daemon=True).start()
    # Once both kernels train together (process 0's executed copy, which papermill saves as it runs, shows the
    # second epoch), process 1 and its kernel are killed
    executed = reports / ".staging-tiny" / "rounds" / "seed-42" / "notebooks" / "02_cnn.ipynb"
    deadline = time.monotonic() + 600
    while not (executed.is_file() and "Epoch 2/" in executed.read_text()):
        assert time.monotonic() < deadline and first.poll() is None, "".join(first_output)[-3000:]
        time.sleep(1)
    for process in [*psutil.Process(second.pid).children(recursive=True), psutil.Process(second.pid)]:
        process.kill()  # its kernel included (Jupyter starts kernels in their own session)
    second.wait()
    first.wait(timeout=900)
    reader.join(timeout=60)
    output = "".join(first_output)
    assert first.returncode == 1, output[-3000:]
    # the collective whose peer is gone fails (gloo: "Connection closed by peer", or another of its words), or JAX
    # ends the kernel; either way the step is named, with what it means
    assert "error: rounds/seed-42/02_cnn.ipynb" in output, output[-3000:]
    assert "another process of the run may have stopped" in output, output[-3000:]
    assert "The previous report and artefacts are unchanged" in output
    assert (reports / "report.html").read_text() == "the last good report"
    assert not (reports / "tiny").exists(), "nothing published"
