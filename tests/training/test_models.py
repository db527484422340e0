import keras
import numpy as np
import pytest

from lib.core.config import parse_params
from lib.core.devices import Devices
from lib.data.assets import MOBILENET_V2_WEIGHTS_NAME
from lib.data.sources import keras_cache_dir
from lib.training import models

DEFAULTS = parse_params({})
IMAGENET_WEIGHTS = keras_cache_dir() / "models" / MOBILENET_V2_WEIGHTS_NAME
RANDOM_WEIGHTS = DEFAULTS.mobilenet_v2.model_copy(update={"weights": None})


def test_cnn_has_the_studys_parameter_count():
    model = models.build_cnn(5, (224, 224), DEFAULTS.cnn)
    assert models.parameter_counts(model) == {"total": 11_169_605, "trainable": 11_169_605, "non_trainable": 0}


def test_mobilenet_head_has_the_studys_trainable_parameter_count():
    model, base = models.build_mobilenet_v2(5, (224, 224), RANDOM_WEIGHTS)
    counts = models.parameter_counts(model)
    assert counts["trainable"] == 164_613
    assert counts["total"] == 164_613 + models.parameter_counts(base)["total"]
    assert not any(layer.trainable for layer in base.layers if layer.weights)


def test_phase_two_unfreezes_the_last_twenty_layers_and_keeps_batchnorm_in_inference_mode():
    model, base = models.build_mobilenet_v2(3, (96, 96), RANDOM_WEIGHTS)
    head_only = models.parameter_counts(model)["trainable"]
    unfrozen = models.unfreeze_top(base, 20)
    last_twenty = base.layers[-20:]
    batchnorms = [l for l in last_twenty if isinstance(l, keras.layers.BatchNormalization)]
    assert len(batchnorms) == 7
    assert unfrozen == [l.name for l in last_twenty if l not in batchnorms]
    assert [layer.name for layer in base.layers if layer.trainable] == unfrozen
    top_weights = sum(int(np.prod(w.shape)) for layer in last_twenty for w in layer.trainable_weights)
    assert models.parameter_counts(model)["trainable"] == head_only + top_weights > head_only

    before = [keras.ops.convert_to_numpy(bn.moving_mean).copy() for bn in batchnorms]
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 96, 96, 3)).astype("float32")
    model.fit(x, np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]], epochs=2, verbose=0)
    after = [keras.ops.convert_to_numpy(bn.moving_mean) for bn in batchnorms]
    assert all(np.array_equal(b, a) for b, a in zip(before, after)), "BatchNorm statistics must not move"


def test_pixels_are_scaled_as_each_model_expects():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, 32, 32, 3)).astype("float32")
    pixels[0, 0, 0] = [0, 255, 0]

    cnn = models.build_cnn(2, (32, 32), DEFAULTS.cnn)
    scaled = keras.ops.convert_to_numpy(cnn.get_layer("scale_0_1")(pixels))
    assert scaled.min() == 0.0 and scaled.max() == 1.0

    mobilenet, _ = models.build_mobilenet_v2(2, (32, 32), RANDOM_WEIGHTS)
    preprocessed = keras.ops.convert_to_numpy(mobilenet.get_layer("mobilenet_v2_preprocess")(pixels))
    expected = keras.applications.mobilenet_v2.preprocess_input(pixels.copy())
    np.testing.assert_allclose(preprocessed, expected, atol=1e-6)
    assert preprocessed.min() == -1.0 and preprocessed.max() == 1.0


@pytest.mark.skipif(not IMAGENET_WEIGHTS.is_file(), reason=f"{IMAGENET_WEIGHTS} is not in Keras' cache here")
def test_imagenet_weights_load_from_keras_cache():
    base = models.mobilenet_v2_base((96, 96), "imagenet")
    random_base = models.mobilenet_v2_base((96, 96), None)
    kernel = base.get_layer("Conv1").kernel
    assert not np.allclose(keras.ops.convert_to_numpy(kernel), keras.ops.convert_to_numpy(random_base.get_layer("Conv1").kernel))


def test_missing_weights_say_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(models.WeightsUnavailableError) as raised:
        models.build_mobilenet_v2(5, (96, 96), DEFAULTS.mobilenet_v2)
    assert str(tmp_path / "models" / MOBILENET_V2_WEIGHTS_NAME) in str(raised.value)
    assert "--assets" in str(raised.value)


def test_models_load_in_safe_mode_even_where_unsafe_loading_was_switched_on(tmp_path):
    """Keras loads safely by default; the project's loader (the one every model load goes through, a resumed
    training's included) must stay safe when some code has switched the global default off."""
    from keras.src.backend.common import global_state

    from lib.training.models import load_trained_model

    file = tmp_path / "model.keras"
    inputs = keras.Input((4,))
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    unsafe.save(file)
    before = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()
    try:
        # unsafe globally now: even load_model's explicit safe_mode=True runs the Lambda
        assert keras.models.load_model(file, safe_mode=True).predict(np.ones((1, 4)), verbose=0)[0, 0] == 2.0
        with pytest.raises(ValueError, match="safe_mode"):
            load_trained_model(file)
    finally:
        global_state.set_global_attribute("safe_mode_saving", before)


def test_a_damaged_or_truncated_weights_file_is_fetched_again(tmp_path, monkeypatch, capsys):
    """A captive portal's page, or a download cut short, in Keras' cache: deleted and downloaded again (which
    fails here, offline, saying where the file goes)."""
    import h5py

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / MOBILENET_V2_WEIGHTS_NAME
    cached.parent.mkdir()
    whole = tmp_path / "whole.h5"
    with h5py.File(whole, "w") as file:
        file["kernel"] = np.arange(4096, dtype=np.float32)
    assert models.readable_hdf5(whole)
    for damaged in (b"<html>captive portal</html>", whole.read_bytes()[: whole.stat().st_size // 2]):
        cached.write_bytes(damaged)
        assert not models.readable_hdf5(cached)
        with pytest.raises(models.WeightsUnavailableError, match="(?s)could not be downloaded.*Put the file"):
            models.mobilenet_v2_base((96, 96), "imagenet")
        assert not cached.exists(), "the damaged copy is gone"
        assert "is not a complete HDF5 file" in capsys.readouterr().out


def gpus(capability: float, count: int = 1) -> Devices:
    return Devices("tensorflow", "2.21.0", "3.15.1", "gpu", ("NVIDIA A GPU",) * count, capability, 16)


@pytest.mark.parametrize(("devices", "expected", "compute_dtype"), [
    (gpus(7.5), "mixed_float16", "float16"),  # Turing, Volta: float16 tensor cores, no bfloat16
    (gpus(8.0, count=2), "mixed_bfloat16", "bfloat16"),  # Ampere and later
    (gpus(9.0), "mixed_bfloat16", "bfloat16"),
    (Devices("jax", "0.10.2", "3.15.1", "tpu", ("TPU v5 lite",)), "mixed_bfloat16", "bfloat16"),
])
def test_precision_auto_on_accelerators_is_bfloat16_from_compute_capability_8_else_float16(devices, expected,
                                                                                          compute_dtype):
    try:
        assert models.set_precision("auto", devices) == expected
        assert keras.config.dtype_policy().name == expected
        cnn = models.build_cnn(3, (32, 32), DEFAULTS.cnn)
        assert cnn.get_layer("conv1").compute_dtype == compute_dtype
        assert cnn.output.dtype == "float32"
    finally:
        models.set_precision("float32")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx2 fma avx512f avx512_bf16 avx512_vnni", "mixed_bfloat16"),  # AMD Zen 4, Intel Cooper Lake
        ("fpu sse avx2 fma avx512f amx_bf16 amx_tile", "mixed_bfloat16"),  # Intel Sapphire Rapids
        ("fpu sse avx2 fma avx512f avx512_vnni", "float32"),  # AVX-512 without bf16 arithmetic
        ("fpu sse avx2 fma", "float32"),
    ],
)
def test_precision_auto_on_a_cpu_is_bfloat16_only_where_the_cpu_computes_in_bfloat16(tmp_path, monkeypatch, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(models, "visible_devices", lambda: Devices("tensorflow", "2.21.0", "3.15.1", "cpu", ("CPU",)))
    monkeypatch.setattr(models, "cpu_has_native_bfloat16",
                        lambda cpuinfo=cpuinfo, real=models.cpu_has_native_bfloat16: real(cpuinfo))
    try:
        assert models.set_precision("auto") == expected
        assert keras.config.dtype_policy().name == expected
        cnn = models.build_cnn(3, (32, 32), DEFAULTS.cnn)
        assert cnn.get_layer("conv1").compute_dtype == {"mixed_bfloat16": "bfloat16"}.get(expected, "float32")
        assert cnn.output.dtype == "float32"  # softmax and loss in full precision
    finally:
        models.set_precision("float32")


def test_without_cpuinfo_a_cpu_counts_as_having_no_bfloat16(tmp_path):
    assert models.cpu_has_native_bfloat16(tmp_path / "no-such-file") is False
