"""Which Keras backend a run uses (`lib.core.backends`), and how batches split over several devices (`lib.core.devices`)."""

import os

import keras
import pytest
from helpers import write_params

from lib import run
from lib.core import backends, devices
from lib.core.backends import BackendError, resolve_backend
from lib.report import tables


@pytest.fixture
def installed(monkeypatch):
    """``installed(*names)``: only these backends count as installed."""
    def only(*names):
        monkeypatch.setattr(backends, "is_installed", lambda backend: backend in names)

    return only


def no_accelerator():
    return None


def a_gpu():
    return "gpu"


@pytest.mark.parametrize(("present", "accelerator", "expected"), [
    (("tensorflow", "jax", "torch"), a_gpu, "jax"),  # JAX where it sees an accelerator
    (("tensorflow", "jax", "torch"), no_accelerator, "tensorflow"),  # else TensorFlow
    (("jax", "torch"), no_accelerator, "jax"),
    (("torch",), no_accelerator, "torch"),
    (("tensorflow", "torch"), a_gpu, "tensorflow"),  # an accelerator, but no JAX to use it
])
def test_auto_prefers_jax_on_an_accelerator_then_tensorflow_jax_torch(installed, present, accelerator, expected):
    installed(*present)
    assert resolve_backend("auto", environ={}, accelerator=accelerator) == expected


def test_auto_without_any_backend_says_how_to_get_one(installed):
    installed()
    with pytest.raises(BackendError, match="none of the Keras backends .* is installed: run tools/setup_env.sh"):
        resolve_backend("auto", environ={}, accelerator=no_accelerator)


def test_keras_backend_is_honoured_and_a_contradicting_param_names_both(installed):
    installed("tensorflow", "jax")
    assert resolve_backend("auto", environ={"KERAS_BACKEND": "jax"}, accelerator=no_accelerator) == "jax"
    assert resolve_backend("jax", environ={"KERAS_BACKEND": "jax"}) == "jax"
    with pytest.raises(BackendError, match="training.backend is 'tensorflow' but KERAS_BACKEND=jax"):
        resolve_backend("tensorflow", environ={"KERAS_BACKEND": "jax"})
    with pytest.raises(BackendError, match="KERAS_BACKEND=numpy is not a backend the study trains with"):
        resolve_backend("auto", environ={"KERAS_BACKEND": "numpy"})


def test_an_explicit_backend_must_be_installed(installed):
    installed("tensorflow")
    assert resolve_backend("tensorflow", environ={}) == "tensorflow"
    with pytest.raises(BackendError, match="the Keras backend 'torch' is not installed"):
        resolve_backend("torch", environ={})


def test_jax_is_asked_in_another_interpreter_what_it_sees():
    import jax

    platform = jax.default_backend()
    assert backends.jax_accelerator() == (None if platform == "cpu" else platform)


def test_kernels_get_the_backend_and_its_determinism_switches():
    assert backends.kernel_environment("jax", False, environ={}) == {"KERAS_BACKEND": "jax"}
    jax = backends.kernel_environment("jax", True, environ={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert jax["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 --xla_gpu_deterministic_ops=true"
    assert "XLA_FLAGS" not in backends.kernel_environment("jax", True, environ={"XLA_FLAGS": jax["XLA_FLAGS"]})
    assert backends.kernel_environment("torch", True, environ={})["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert backends.kernel_environment("tensorflow", True, environ={})["TF_DETERMINISTIC_OPS"] == "1"


def test_environment_variables_are_restored_afterwards(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--before")
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    with backends.environment_variables({"KERAS_BACKEND": "jax", "XLA_FLAGS": "--during"}):
        assert (os.environ["KERAS_BACKEND"], os.environ["XLA_FLAGS"]) == ("jax", "--during")
    assert "KERAS_BACKEND" not in os.environ and os.environ["XLA_FLAGS"] == "--before"


def test_a_notebook_whose_keras_runs_another_backend_stops_with_the_remedy():
    active = keras.backend.backend()
    other = "jax" if active != "jax" else "tensorflow"
    assert backends.check_active_backend("auto") == active
    assert backends.check_active_backend(active) == active
    with pytest.raises(BackendError, match=f"training.backend is '{other}' but Keras runs on '{active}'.*"
                                           f"restart the kernel with KERAS_BACKEND={other}"):
        backends.check_active_backend(other)


def test_the_runner_refuses_a_backend_that_contradicts_keras_backend_before_any_notebook(tmp_path, monkeypatch,
                                                                                       capsys):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    params_file = write_params(tmp_path / "p.yaml", {"reports_dir": str(tmp_path / "r"), "training": {"backend": "jax"}})
    assert run.main([str(params_file)]) == 2
    assert "training.backend is 'jax' but KERAS_BACKEND=tensorflow" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_this_process_sees_its_cpu_and_names_backend_and_version():
    seen = devices.visible_devices()
    assert seen.backend == keras.backend.backend() and seen.platform == "cpu" and seen.count == 1
    assert seen.replicas == 1 and seen.describe() == f"CPU, {os.cpu_count()} cores"
    assert seen.keras_version == keras.version()
    recorded = seen.to_dict()
    assert recorded["description"] == seen.describe() and recorded["backend_version"] == seen.backend_version


def test_device_descriptions_and_their_words_in_the_report():
    gpus = devices.Devices("jax", "0.10.2", "3.15.1", "gpu", ("NVIDIA H100 80GB HBM3",) * 2, 9.0, 16)
    assert gpus.describe() == "2 × NVIDIA H100 80GB HBM3" and gpus.replicas == 2
    assert tables.runtime_words(gpus.to_dict() | {"batch_size": 32}) == (
        "JAX 0.10.2 (Keras 3.15.1) on 2 × NVIDIA H100 80GB HBM3, data-parallel over 2 devices (global batch 32)")
    one_of_two = devices.Devices("torch", "2.9.0", "3.15.1", "gpu", ("NVIDIA A100",) * 2, 8.0)
    assert one_of_two.replicas == 1  # Keras' PyTorch backend has no data-parallel API
    assert tables.runtime_words(one_of_two.to_dict()).endswith("on 2 × NVIDIA A100, trained on one of them")
    assert tables.runtime_words(None) == "not recorded"  # a run from before the record


@pytest.mark.parametrize(("count", "training", "sizes"), [
    (21, True, [8, 8, 5]),
    (21, False, [8, 8, 5]),
])
def test_on_one_device_batches_run_in_order_with_the_short_one_last(count, training, sizes):
    rows = devices.batch_rows(count, 8, training, replicas=1)
    assert [r.stop - r.start for r in rows] == sizes and rows[0].start == 0 and rows[-1].stop == count


@pytest.mark.parametrize(("count", "training", "sizes"), [
    (21, True, [8, 8, 4]),  # one image left out of this epoch: every training batch splits in two
    (20, True, [8, 8, 4]),
    (16, True, [8, 8]),
    (13, False, [5, 8]),  # evaluation keeps every image, its short batch first
    (16, False, [8, 8]),
    (1, False, [1]),
])
def test_over_two_devices_training_batches_split_evenly_and_evaluation_keeps_every_row(count, training, sizes):
    rows = devices.batch_rows(count, 8, training, replicas=2)
    assert [r.stop - r.start for r in rows] == sizes
    assert all(a.stop == b.start for a, b in zip(rows, rows[1:])) and rows[0].start == 0
    if training:
        assert all((r.stop - r.start) % 2 == 0 for r in rows) and count - rows[-1].stop < 2
    else:
        assert rows[-1].stop == count


def test_a_batch_size_the_devices_cannot_split_is_refused():
    three = devices.Devices("jax", "0.10.2", "3.15.1", "gpu", ("GPU",) * 3, 8.0)
    with pytest.raises(ValueError, match="training.batch_size 32 does not split evenly over the 3 devices .* "
                                         "choose a multiple of 3, e.g. 30"):
        with devices.data_parallel(three, 32):
            pass
    assert devices.active_replicas() == 1


def _pins(path) -> dict[str, str]:
    """``name: version`` of a requirements file's ``name==version`` lines (extras dropped, names normalised)."""
    import re

    pins = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*])?==(\S+)", line.strip()):
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[3]
    return pins


def test_the_gpu_requirements_add_jaxs_cuda_build_of_the_locks_jax_and_pin_nothing_else_twice():
    from lib.core.paths import PROJECT_ROOT

    lock, gpu = _pins(PROJECT_ROOT / "requirements.lock"), _pins(PROJECT_ROOT / "requirements-gpu.txt")
    assert lock["jax"] == lock["jaxlib"] == gpu["jax"] == gpu["jax-cuda12-plugin"] == gpu["jax-cuda12-pjrt"]
    assert not set(lock) & set(gpu) - {"jax"}, "a package pinned in both files"
    assert "tensorflow" in lock and "torch" not in lock
