"""Grad-CAM on models whose answer is known, and the choice of test images to show."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers

from lib.analysis import explain
from lib.core.config import parse_params
from lib.training import models

DEFAULTS = parse_params({})
SMALL_CNN = DEFAULTS.cnn.model_copy(update={"conv_filters": [4, 8], "dense_units": 8})
RANDOM_MOBILENET = DEFAULTS.mobilenet_v2.model_copy(update={"weights": None, "dense_units": 8})

RED, GREEN = (255, 0, 0), (0, 255, 0)
TOP_RIGHT = (slice(0, 16), slice(16, 32))  # not symmetric under a transpose or a flip of either axis


def colour_detector_model(top_right_only: bool) -> keras.Model:
    """A 1x1 convolution that detects red (channel 0) and green (channel 1), pooled, then class 0 = red minus
    green and class 1 = green minus red. With ``top_right_only`` the classifier reads only the top-right
    quadrant of the feature map (a crop), so its output depends on that region alone."""
    inputs = keras.Input((32, 32, 3))
    detected = layers.Conv2D(2, 1, activation="relu", use_bias=False, name="detectors")(inputs)
    if top_right_only:
        detected = layers.Cropping2D(((0, 16), (16, 0)), name="top_right")(detected)
    pooled = layers.GlobalAveragePooling2D()(detected)
    outputs = layers.Dense(2, activation="softmax", dtype="float32", name="probabilities")(pooled)
    model = keras.Model(inputs, outputs)
    # red pixel (1, 0, 0) -> channel 0 only; green (0, 1, 0) -> channel 1 only; black -> nothing
    model.get_layer("detectors").set_weights([np.array([[[[1, -1], [-1, 1], [-1, -1]]]], "float32") / 255])
    model.get_layer("probabilities").set_weights([np.array([[4, -4], [-4, 4]], "float32"), np.zeros(2, "float32")])
    return model


def picture(*squares) -> np.ndarray:
    """A black 32x32 picture with coloured squares: ``((rows, columns), colour)`` pairs."""
    image = np.zeros((32, 32, 3), np.uint8)
    for region, colour in squares:
        image[region] = colour
    return image


def mass_in(heatmap: np.ndarray, region) -> float:
    return float(heatmap[region].sum() / heatmap.sum())


def test_the_map_falls_in_the_only_region_the_model_reads():
    """The classifier reads only the top-right quadrant, where the red square is; green clutter lies
    everywhere else. A map in the wrong place (a transposed or flipped map, the wrong class, gradients
    averaged over the wrong axis) puts its mass outside the quadrant."""
    model = colour_detector_model(top_right_only=True)
    image = picture(((slice(2, 12), slice(20, 30)), RED), ((slice(20, 30), slice(2, 12)), GREEN),
                    ((slice(20, 30), slice(20, 30)), GREEN), ((slice(2, 12), slice(2, 12)), GREEN))
    assert model.predict(image[None].astype("float32"), verbose=0).argmax() == 0  # red
    heatmap = explain.grad_cam(model, image, layer_name="detectors")
    assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32
    assert mass_in(heatmap, TOP_RIGHT) > 0.9


def test_each_class_map_points_at_that_class_evidence():
    model = colour_detector_model(top_right_only=False)
    red_square, green_square = (slice(2, 12), slice(20, 30)), (slice(20, 30), slice(2, 12))
    image = picture((red_square, RED), (green_square, GREEN))
    red_map, green_map = explain.grad_cam(model, np.stack([image, image]), class_indices=[0, 1])
    assert mass_in(red_map, red_square) > 0.9
    assert mass_in(green_map, green_square) > 0.9
    np.testing.assert_array_equal(explain.grad_cam(model, image, class_indices=1), green_map)


def test_maps_are_computed_in_float32_under_a_mixed_precision_policy():
    expected = explain.grad_cam(colour_detector_model(top_right_only=False), picture((TOP_RIGHT, RED)), 0)
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32
    mixed = colour_detector_model(top_right_only=False)
    assert mixed.get_layer("detectors").compute_dtype == "bfloat16"
    heatmap = explain.grad_cam(mixed, picture((TOP_RIGHT, RED)), 0)
    assert heatmap.dtype == np.float32
    np.testing.assert_allclose(heatmap, expected, atol=0.02)


def random_pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def assert_valid_maps(maps: np.ndarray, n: int, size: int) -> None:
    assert maps.shape == (n, size, size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() in (0.0, 1.0) for m in maps)  # each map scaled by its own peak


def test_the_study_cnn_is_explained_at_its_last_convolution_by_default():
    keras.utils.set_random_seed(0)
    cnn = models.build_cnn(3, (32, 32), SMALL_CNN)
    images = random_pixels(3, 32)
    maps = explain.grad_cam(cnn, images)
    assert_valid_maps(maps, 3, 32)
    assert maps.max() == 1.0
    np.testing.assert_array_equal(maps, explain.grad_cam(cnn, images, layer_name="conv2"))
    predicted = cnn.predict(images.astype("float32"), verbose=0).argmax(axis=1)
    np.testing.assert_array_equal(maps, explain.grad_cam(cnn, images, class_indices=predicted))


def test_mobilenet_v2_is_explained_inside_its_nested_base_and_after_a_reload(tmp_path):
    keras.utils.set_random_seed(0)
    model, _ = models.build_mobilenet_v2(3, (64, 64), RANDOM_MOBILENET)  # 64 px: a 2 x 2 feature map
    images = random_pixels(2, 64)
    maps = explain.grad_cam(model, images, class_indices=[0, 2])
    assert_valid_maps(maps, 2, 64)
    assert maps.max() == 1.0 and maps.min() < 1.0  # a map, not a constant
    np.testing.assert_array_equal(maps, explain.grad_cam(model, images, [0, 2], layer_name="out_relu"))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(explain.grad_cam(reloaded, images, [0, 2]), maps, atol=1e-5)


def test_repeated_calls_do_not_grow_the_model_graph():
    model = colour_detector_model(top_right_only=False)
    explain.grad_cam(model, picture(), 0)
    calls = [len(layer._inbound_nodes) for layer in model.layers]
    explain.grad_cam(model, picture(), 0)
    assert [len(layer._inbound_nodes) for layer in model.layers] == calls


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"layer_name": "conv9"}, "has no layer named 'conv9'; its last layers with a 4-D output: .*conv2"),
        ({"layer_name": "dense"}, r"layer 'dense' outputs shape \(any, 8\); Grad-CAM needs a 4-D feature map"),
        ({"images": np.zeros((2, 31, 32, 3))}, r"matching the input of 'custom_cnn', \(32, 32, 3\); got shape"),
        ({"images": np.full((32, 32, 3), np.nan)}, "NaN or infinite"),
        ({"class_indices": [0, 3]}, r"class_indices must lie in 0..2 \(the model has 3 classes\), got \[0, 3\]"),
        ({"class_indices": [0]}, "class_indices must be one int or 2 ints"),
    ],
)
def test_bad_inputs_are_named(arguments, message):
    cnn = models.build_cnn(3, (32, 32), SMALL_CNN)
    call = {"images": random_pixels(2, 32)} | arguments
    with pytest.raises(ValueError, match=message):
        explain.grad_cam(cnn, **call)


def test_a_layer_that_a_residual_connection_bypasses_is_refused():
    model, _ = models.build_mobilenet_v2(2, (32, 32), RANDOM_MOBILENET)
    with pytest.raises(ValueError, match="does not depend on layer 'block_5_project' alone"):
        explain.grad_cam(model, random_pixels(1, 32), layer_name="block_5_project")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="started once, from the TensorFlow run")
def test_this_file_passes_under_the_jax_backend():
    """grad_cam's gradient has one branch per backend: where JAX is installed, its branch runs these tests too."""
    run = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"],
                         env=os.environ | {"KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:]  # pytest exits 1 on a failure, 5 when nothing ran


def test_overlay_blends_the_colormap_over_the_photo():
    image = np.full((4, 6, 3), 100, np.uint8)
    heat = np.zeros((4, 6), np.float32)
    heat[0, 0] = 1.0
    blended = explain.overlay(image, heat, alpha=0.5, colormap="gray")
    assert blended.dtype == np.uint8 and blended.shape == (4, 6, 3)
    assert tuple(blended[0, 0]) == (178, 178, 178)  # (100 + 255) / 2, rounded
    assert tuple(blended[1, 1]) == (50, 50, 50)
    np.testing.assert_array_equal(explain.overlay(image, heat, alpha=0.0), image)
    with pytest.raises(ValueError, match="heatmap must have the image's height and width"):
        explain.overlay(image, heat.T)


# ---------------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------------


def test_display_label_shows_odd_class_names_safely():
    from lib.report.plots import display_label

    assert display_label("tab\there") == r"tab\there"
    assert display_label("two\nlines") == r"two\nlines"
    assert display_label('a, "quoted" <i>name</i>') == 'a, "quoted" <i>name</i>'  # matplotlib shows text as is
    assert display_label("costs $5") == r"costs \$5"  # not a matplotlib formula
    assert display_label("x" * 40, max_length=10) == "x" * 9 + "…"


def test_grad_cam_grid_titles_every_panel_with_safe_labels():
    import io

    import matplotlib.pyplot as plt

    from lib.report.plots import grad_cam_grid

    odd = ["a\tb", 'c, "d"\n<i>e</i>', "$x$"]
    examples = pd.DataFrame({
        "true_label": odd,
        "CNN predicted": [odd[0], odd[2], odd[2]], "CNN probability": [0.9, 0.51, 1.0],
        "CNN correct": [True, False, True],
        "MobileNetV2 predicted": odd, "MobileNetV2 probability": [0.8, 0.7, 0.6],
        "MobileNetV2 correct": [True, True, True],
    })
    photos = [np.full((8, 8, 3), 50 * i, np.uint8) for i in range(3)]
    overlays = {"CNN": photos, "MobileNetV2": photos}
    fig = grad_cam_grid(examples, photos, overlays, examples_per_row=2)
    fig.savefig(io.BytesIO(), format="png")  # draws every title: no formula parsed, nothing raised
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(fig.axes) == 2 * 6 and len(titles) == 3 * 3
    assert titles[:3] == [r"true: a\tb", "CNN\npredicted: a\\tb\np = 0.90, right",
                          "MobileNetV2\npredicted: a\\tb\np = 0.80, right"]
    assert titles[4] == 'CNN\npredicted: \\$x\\$\np = 0.51, wrong'
    assert titles[3] == r'true: c, "d"\n<i>e</i>'
    plt.close(fig)
    with pytest.raises(ValueError, match="one photo and one overlay per model for each of the 3 examples"):
        grad_cam_grid(examples, photos[:2], overlays)


def test_with_many_classes_the_rare_class_and_the_most_misclassified_ones_are_shown():
    from lib.analysis import explain

    names = [f"c{i}" for i in range(12)]
    true = [name for name in names for _ in range(3)]
    wrong = {"c5": 3, "c9": 2, "c2": 1}  # test images of each class that model A gets wrong
    predicted = [("c0" if true[i] != "c0" else "c1") if k < wrong.get(true[i], 0) else true[i]
                 for i, k in zip(range(len(true)), [j % 3 for j in range(len(true))])]
    table = pd.DataFrame({"true_label": true, "predicted_label": predicted})
    shown = explain.classes_to_show({"A": table, "B": table.assign(predicted_label=true)}, names, "c11", limit=4)
    assert shown == ["c2", "c5", "c9", "c11"]  # in class order: the three most wrong, and the rare class
    assert explain.classes_to_show({"A": table}, names[:4], "c3", limit=4) == names[:4]  # few classes: all
