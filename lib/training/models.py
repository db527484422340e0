"""The two models of the study, built from their parameters.

Both take raw pixels (0-255, float) and do their own scaling as a first layer, so a saved
model classifies an image as it is decoded. Both use only built-in layers, so they load
with Keras' safe mode (no Lambda layers, no pickled code).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from lib.core.devices import Devices, visible_devices
from lib.core.hardware import cpu_has_native_bfloat16, precision_for
from lib.data.assets import MOBILENET_V2_WEIGHTS_NAME
from lib.data.sources import keras_cache_dir


def auto_precision(devices: Devices | None = None) -> str:
    """What ``training.precision: auto`` means on the devices Keras' backend sees (default: `visible_devices`):
    `lib.core.hardware.precision_for` (mixed bfloat16 on Ampere-or-later GPUs, TPUs and CPUs with bfloat16
    arithmetic; mixed float16 on older GPUs; float32 on other CPUs)."""
    devices = devices or visible_devices()
    return precision_for(devices.platform, devices.compute_capability, cpu_has_native_bfloat16())


def set_precision(precision: str, devices: Devices | None = None) -> str:
    """Set Keras' global dtype policy from ``training.precision``; returns the policy's name.

    'auto' is resolved by `auto_precision` (for ``devices``, default those Keras' backend sees). Mixed policies keep the weights in float32 and
    compute in 16 bits; both models' output layers stay float32 either way.
    """
    if precision == "auto":
        precision = auto_precision(devices)
    keras.config.set_dtype_policy(precision)
    return precision


class WeightsUnavailableError(RuntimeError):
    """The ImageNet weights are neither in Keras' cache nor downloadable."""


def build_cnn(n_classes: int, image_size: tuple[int, int], cnn) -> keras.Model:
    """The study's CNN: [Conv2D(f, k, relu) + MaxPool(2)] per filter count, Flatten, Dense, Dropout, softmax.

    Pixels are scaled to [0, 1] inside the model. At 224 px, [32, 64, 128] filters and 5
    classes it has 11,169,605 parameters, as the study's did.
    """
    inputs = keras.Input(shape=(*image_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255, name="scale_0_1")(inputs)
    for block, filters in enumerate(cnn.conv_filters, start=1):
        x = layers.Conv2D(filters, cnn.kernel_size, activation="relu", name=f"conv{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(cnn.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(cnn.dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="custom_cnn")


MOBILENET_V2_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + MOBILENET_V2_WEIGHTS_NAME
)


def readable_hdf5(path: Path) -> bool:
    """Whether ``path`` is a whole HDF5 file (HDF5 checks the file's end against its header: a truncated one
    fails to open)."""
    import h5py

    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def imagenet_weights_file() -> str:
    """The 224 px ImageNet weights of MobileNetV2 (no top), from Keras' cache or downloaded into it.

    Keras would pick a size-specific file for 96-192 px inputs; the convolution weights do
    not depend on the input size, so the one 224 px file serves every size.
    """
    target = keras_cache_dir() / "models" / MOBILENET_V2_WEIGHTS_NAME
    if target.is_file():
        if readable_hdf5(target):
            return str(target)
        # a download cut short, or a damaged copy: Keras' cache is ours to mend
        print(f"{target} is not a complete HDF5 file (a download cut short?): it is downloaded again", flush=True)
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)  # or get_file falls back to /tmp/.keras
    try:
        return keras.utils.get_file(
            MOBILENET_V2_WEIGHTS_NAME, MOBILENET_V2_WEIGHTS_URL, cache_dir=str(keras_cache_dir()), cache_subdir="models"
        )
    except Exception as error:  # noqa: BLE001 - a failed download surfaces as several exception types
        raise WeightsUnavailableError(
            f"The ImageNet weights of MobileNetV2 are not in Keras' cache and could not be downloaded ({error}).\n"
            f"Put the file {MOBILENET_V2_WEIGHTS_NAME} at\n    {target}\n"
            "or run ./run_all.sh --assets FOLDER with a folder that holds it."
        ) from None


def mobilenet_v2_base(image_size: tuple[int, int], weights: str | None) -> keras.Model:
    """Keras' MobileNetV2 (alpha 1.0) without its classifier, with ImageNet weights or random ones."""
    return keras.applications.MobileNetV2(
        input_shape=(*image_size, 3),
        include_top=False,
        weights=imagenet_weights_file() if weights == "imagenet" else None,
    )


def build_mobilenet_v2(n_classes: int, image_size: tuple[int, int], mobilenet) -> tuple[keras.Model, keras.Model]:
    """MobileNetV2 transfer learning: the frozen base, then GAP, Dense, Dropout, softmax.

    Inputs are scaled to [-1, 1] exactly as ``keras.applications.mobilenet_v2.preprocess_input``
    does (x / 127.5 - 1), but as a Rescaling layer so the saved model needs no custom code.
    The base is called with ``training=False`` and its BatchNormalization layers are never
    unfrozen (see `unfreeze_top`), so they run in inference mode throughout. Returns the model and its base (which `unfreeze_top` works on).
    """
    base = mobilenet_v2_base(image_size, mobilenet.weights)
    base.trainable = False
    inputs = keras.Input(shape=(*image_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")(inputs)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(mobilenet.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(mobilenet.dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_transfer"), base


def unfreeze_top(base: keras.Model, n_layers: int | str) -> list[str]:
    """Unfreeze the base's last ``n_layers`` layers (the study's phase 2), or "all"; return the names made
    trainable.

    BatchNormalization layers among them stay frozen, which in Keras 3 is what keeps them
    in inference mode: ``fit`` calls the model with ``training=True``, and that overrides
    the ``training=False`` the base was called with (keras-team/keras#20285), so only
    ``trainable=False`` stops their ImageNet statistics from drifting on a small dataset.
    This is the recipe of Keras' own fine-tuning guide.
    """
    base.trainable = True
    cut = 0 if n_layers == "all" else len(base.layers) - n_layers if n_layers else len(base.layers)
    unfrozen = []
    for position, layer in enumerate(base.layers):
        layer.trainable = position >= cut and not isinstance(layer, layers.BatchNormalization)
        if layer.trainable:
            unfrozen.append(layer.name)
    return unfrozen


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Total, trainable and frozen parameter counts, as ``model.summary()`` reports them."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    frozen = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return {"total": trainable + frozen, "trainable": trainable, "non_trainable": frozen}


def load_trained_model(file) -> keras.Model:
    """A saved ``.keras`` model, loaded in Keras' safe mode whatever the global setting: nothing in the
    file can run code (a Lambda layer's pickled function is refused)."""
    # `keras.config.enable_unsafe_deserialization()`, called anywhere in the process, overrides
    # load_model's own safe_mode=True; only a safe-mode scope around the call overrides it back.
    from keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(True):
        return keras.models.load_model(file, safe_mode=True)
