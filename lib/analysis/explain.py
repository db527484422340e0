"""What the models look at and where they fail: Grad-CAM heat maps, and the test images worth showing.

`grad_cam` is the one saliency function of the study: the notebooks, the report and any
other code (a web app) call it on any image. The selection helpers read the test
predictions tables the model steps write (`lib.training.evaluate.predictions_table`: path,
relpath, true_label, predicted_label, one ``p_<class>`` column per class) and pair the
models' tables by ``relpath``, as `lib.analysis.compare` does.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import keras
import matplotlib
import numpy as np
import pandas as pd
from keras import ops

from lib.analysis.compare import load_results
from lib.analysis.errors import discordant_images, explanation_examples, most_confused, side_by_side, top_losses
from lib.core.step import StepRun
from lib.core.study import MODELS
from lib.data.images import load_rgb
from lib.data.rounds import evaluation_rounds
from lib.data.split import read_split
from lib.training.models import load_trained_model

# ---------------------------------------------------------------------------------------------
# Grad-CAM
# ---------------------------------------------------------------------------------------------

# Layers that reduce a feature map to one vector per image: where the search for the map stops (named, because
# a global pooling with keepdims=True still has a 4-D output).
_REDUCTIONS = (
    keras.layers.Flatten,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)

# Pooling after the last convolution only coarsens its map: Grad-CAM uses the finer map before it.
_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    class_indices=None,
    layer_name: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM heat maps: where in each image the evidence for a class lies.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017: the feature maps A^k of a convolutional layer, weighted by the
    spatial mean of the gradient of the class score with respect to each of them, summed and
    passed through a ReLU: ``ReLU(sum_k mean_xy(d y_c / d A^k) * A^k)``. The class score is
    the pre-softmax logit when the output layer is a Dense softmax (as in the paper, so that
    a saturated probability does not zero the gradient), otherwise the model's output.

    - ``model``: a Keras model with one image input (batch, height, width, channels) and one
      output, e.g. `lib.training.models.build_cnn` or `lib.training.models.build_mobilenet_v2`;
    - ``images``: raw pixels as the model takes them, (n, height, width, channels) or one
      image (height, width, channels), any numeric dtype;
    - ``class_indices``: the class of each map, one int or one per image; None: each image's
      predicted class;
    - ``layer_name``: the convolutional layer, also one inside a nested model (MobileNetV2's
      ``out_relu``); None: the last layer with a 4-D output before the model's
      Flatten/global pooling, searched inside nested models, stepping back over pooling
      layers (for the CNN its last Conv2D, for MobileNetV2 ``out_relu``);
    - ``batch_size``: images per forward and backward pass (memory, not results).

    Returns float32 maps in [0, 1] at the images' resolution, each scaled by its own maximum
    (all zeros where no region raises the score), shape (n, height, width), or (height,
    width) for one image. The maps are computed in float32 whatever the model's dtype policy
    (the gradient itself has the precision of the model's compute dtype).

    Grad-CAM averages the gradient over the map, so it shows where the features that raise the
    class score are, even where a classifier that reads positions separately (a Flatten
    head like the CNN's) gives them little weight (Draelos & Carin, 2020, HiResCAM). After a
    global average pooling (MobileNetV2) the gradient is the same at every position and this
    caveat does not arise.
    """
    pixels, single = _checked_images(model, images)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    requested = _checked_classes(class_indices, len(pixels), model.outputs[0].shape[-1])
    features, head = _split_cached(model, layer_name)
    maps = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size]
        activations = ops.cast(features(ops.convert_to_tensor(batch)), "float32")
        if requested is None:
            classes = ops.convert_to_numpy(ops.argmax(head(activations), axis=-1))
        else:
            classes = requested[start : start + batch_size]
        gradients = _gradient(lambda a: _class_scores(head(a), classes), activations)
        maps.append(_weighted_map(activations, ops.cast(gradients, "float32"), pixels.shape[1:3]))
    maps = np.concatenate(maps)
    return maps[0] if single else maps


def _checked_images(model: keras.Model, images) -> tuple[np.ndarray, bool]:
    """The images as a float32 batch matching the model's input, and whether one image was given."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"grad_cam needs a model with one input and one output; {model.name!r} has "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"images must be numeric pixels, got dtype {array.dtype}")
    single = array.ndim == 3
    batch = array[None] if single else array
    expected = tuple(model.inputs[0].shape[1:])
    if batch.ndim != 4 or len(batch) == 0 or any(e is not None and e != s for e, s in zip(expected, batch.shape[1:])):
        raise ValueError(f"images must be (n, height, width, channels) or one (height, width, channels) image "
                         f"matching the input of {model.name!r}, {_shape_text(expected)}; got shape {array.shape}")
    if not np.isfinite(batch).all():
        raise ValueError("images contain NaN or infinite values")
    return batch.astype("float32"), single


def _shape_text(shape) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"


def _checked_classes(class_indices, n_images: int, n_classes: int) -> np.ndarray | None:
    """The class of each image as an array, or None (each image's predicted class)."""
    if class_indices is None:
        return None
    given = np.asarray(class_indices)
    if given.ndim == 0:
        given = np.full(n_images, given)
    if given.shape != (n_images,) or not np.issubdtype(given.dtype, np.integer):
        raise ValueError(f"class_indices must be one int or {n_images} ints (one per image), got {class_indices!r}")
    if given.min() < 0 or given.max() >= n_classes:
        raise ValueError(f"class_indices must lie in 0..{n_classes - 1} (the model has {n_classes} classes), "
                         f"got {sorted(set(given.tolist()))}")
    return given


def _class_scores(logits, classes: np.ndarray):
    """Each image's score for its class: one number per image."""
    return ops.sum(logits * ops.one_hot(ops.convert_to_tensor(classes), logits.shape[-1], dtype="float32"), axis=-1)


def _weighted_map(activations, gradients, size) -> np.ndarray:
    """ReLU of the channels weighted by their mean gradient, resized to ``size`` and scaled to [0, 1]."""
    weights = ops.mean(gradients, axis=(1, 2), keepdims=True)
    cam = ops.relu(ops.sum(weights * activations, axis=-1, keepdims=True))
    cam = ops.convert_to_numpy(ops.image.resize(cam, size, interpolation="bilinear"))[..., 0]
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.clip(np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0), 0, 1).astype("float32")


def _gradient(score_fn, activations):
    """The gradient of ``sum(score_fn(activations))`` with respect to ``activations``, in Keras' backend.

    Each image's score depends only on its own activations (the model runs in inference mode),
    so the gradient of the sum is each image's own gradient.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(activations)
            total = ops.sum(score_fn(activations))
        return tape.gradient(total, activations)
    if backend == "jax":
        import jax

        return jax.grad(lambda a: ops.sum(score_fn(a)))(activations)
    if backend == "torch":
        import torch

        with torch.enable_grad():
            activations = activations.detach().requires_grad_(True)
            ops.sum(score_fn(activations)).backward()
        return activations.grad
    raise NotImplementedError(f"grad_cam has no gradient for Keras backend {backend!r} (tensorflow, jax, torch)")


def _find_layer(model: keras.Model, layer_name: str | None) -> list[keras.layers.Layer]:
    """The path to the feature-map layer: [layer] or [nested model, ..., layer]."""
    if layer_name is None:
        path = _last_feature_map(model)
        if path is None:
            raise ValueError(f"{model.name!r} has no layer with a 4-D output (batch, height, width, channels) "
                             "before its Flatten or global pooling: Grad-CAM needs a convolutional feature map")
        return path
    path = _named(model, layer_name)
    if path is None:
        names = _feature_map_names(model)
        raise ValueError(f"{model.name!r} has no layer named {layer_name!r}; its last layers with a 4-D output: "
                         + ("..., " if len(names) > 8 else "") + ", ".join(names[-8:]))
    shape = _outer_output(path[-1]).shape
    if len(shape) != 4:
        raise ValueError(f"layer {layer_name!r} outputs shape {_shape_text(shape)}; Grad-CAM needs a 4-D feature "
                         "map (batch, height, width, channels)")
    return path


def _last_feature_map(model: keras.Model) -> list | None:
    """The last 4-D, non-pooling layer before the first reduction to a vector, looking inside nested models."""
    found = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, _REDUCTIONS) or len(_outer_output(layer).shape) != 4:
            break
        if isinstance(layer, keras.Model):
            found = [layer, *(_last_feature_map(layer) or [])]
        elif not isinstance(layer, _POOLING):
            found = [layer]
    return found


def _named(model: keras.Model, name: str) -> list | None:
    """The path to the layer called ``name``: the model's own layers first, then those of nested models."""
    for layer in model.layers:
        if layer.name == name:
            return [layer]
    for layer in model.layers:
        if isinstance(layer, keras.Model) and (inner := _named(layer, name)) is not None:
            return [layer, *inner]
    return None


def _feature_map_names(model: keras.Model) -> list[str]:
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += _feature_map_names(layer)
        elif not isinstance(layer, keras.layers.InputLayer) and len(_outer_output(layer).shape) == 4:
            names.append(layer.name)
    return names


def _call(layer):
    """The first call of ``layer``: the one in its model's own graph, as Keras' ``layer.output`` means it.

    A nested model's own ``input``/``output`` are those of its inner graph; its call inside the
    outer model is its inbound node. (Later calls come from sub-models built on the graph, like ours.)
    """
    return layer._inbound_nodes[0]


def _outer_output(layer):
    return _call(layer).output_tensors[0]


# Each model's (features, head) per layer name, built once: building them adds a call to every layer they
# hold, so rebuilding them on each call (a web app's) would grow the model's graph without end.
_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _split_cached(model: keras.Model, layer_name: str | None) -> tuple:
    by_layer = _SPLITS.setdefault(model, {})
    if layer_name not in by_layer:
        by_layer[layer_name] = _split_at(model, _find_layer(model, layer_name))
    return by_layer[layer_name]


def _split_at(model: keras.Model, path: list) -> tuple:
    """``(features, head)``: images -> the layer's feature map, and feature map -> class scores.

    The scores are the logits when the output layer is a Dense softmax: the head then ends at
    that layer's input, and `_dense_logits` applies its weights without the softmax.
    """
    output_layer = model.layers[-1]
    if (isinstance(output_layer, keras.layers.Dense) and output_layer.activation is keras.activations.softmax
            and _outer_output(output_layer) is model.output):
        features, below_output = _split(model, path, end=_call(output_layer).input_tensors[0])
        return features, lambda activations: _dense_logits(output_layer, below_output(activations))
    return _split(model, path, end=model.output)


def _split(model: keras.Model, path: list, end) -> tuple:
    """``(features, head)``: the model's input -> the output of ``path[-1]``, and that -> ``end`` (a tensor of
    ``model``'s graph). A layer inside a nested model splits the nested model, and the outer graph around it."""
    layer, inner = path[0], path[1:]
    call = _call(layer)
    if not inner:
        cut = call.output_tensors[0]
        features = keras.Model(model.input, cut)
        return (lambda x: features(x, training=False)), _sub_model(model, layer, cut, end)
    inner_features, inner_head = _split(layer, inner, end=layer.output)
    before = keras.Model(model.input, call.input_tensors[0])
    after = _sub_model(model, layer, call.output_tensors[0], end)
    return (lambda x: inner_features(before(x, training=False))), (lambda a: after(inner_head(a)))


def _sub_model(model: keras.Model, layer, cut, end):
    """The part of ``model`` from ``cut`` (``layer``'s output) to ``end``, which must depend on nothing else,
    as a function in inference mode."""
    if cut is end:
        return lambda a: a
    try:
        part = keras.Model(cut, end)
        return lambda a: part(a, training=False)
    except ValueError as error:
        raise ValueError(f"the output of {model.name!r} does not depend on layer {layer.name!r} alone (a path "
                         f"bypasses it, e.g. a residual connection): pick a layer every path passes through "
                         f"({error})") from None


def _dense_logits(layer: keras.layers.Dense, inputs):
    """The output layer's scores before its softmax, in float32."""
    logits = ops.matmul(ops.cast(inputs, "float32"), ops.cast(layer.kernel, "float32"))
    return logits if layer.bias is None else logits + ops.cast(layer.bias, "float32")


# ---------------------------------------------------------------------------------------------
# Figures' building blocks
# ---------------------------------------------------------------------------------------------


def overlay(image_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """The heat map (values in [0, 1], the image's height and width) drawn over the photo in a matplotlib
    colormap: RGB uint8, ``(1 - alpha) * photo + alpha * colour``."""
    image = np.asarray(image_uint8)
    heat = np.asarray(heatmap, dtype="float32")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image_uint8 must be a uint8 (height, width, 1, 3 or 4 channels) array, got "
                         f"{image.dtype} {image.shape}")
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heatmap must have the image's height and width {image.shape[:2]}, got {heat.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    colour = matplotlib.colormaps[colormap](np.clip(np.nan_to_num(heat), 0, 1))[..., :3] * 255
    return np.round((1 - alpha) * rgb + alpha * colour).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# What the comparison notebook computes and writes, and the report reads
# ---------------------------------------------------------------------------------------------


@dataclass
class Explanations:
    """The first round's explanations: which test images to show, and both models' Grad-CAM maps of them."""

    examples: pd.DataFrame  # `explanation_examples`
    top_losses: pd.DataFrame  # `top_losses`
    most_confused: pd.DataFrame  # model, then `most_confused`'s columns
    discordant: pd.DataFrame  # `discordant_images`
    maps: dict[str, np.ndarray]  # model name -> (images, height, width): its map of each of `relpaths`
    relpaths: list[str]  # the images mapped: the examples', then the top losses' not among them

    def maps_of(self, table: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each model's maps of ``table``'s images (its ``relpath`` column), in the table's order."""
        rows = [self.relpaths.index(relpath) for relpath in table["relpath"]]
        return {model: maps[rows] for model, maps in self.maps.items()}


def classes_to_show(predictions_by_model: dict[str, pd.DataFrame], class_names: list[str], rare_class: str,
                    limit: int = 8) -> list[str]:
    """The classes whose examples a page can show: every class when there are at most ``limit``, else the rare
    class and the classes the models get wrong most often (test images wrong, summed over the models; ties in
    ``class_names`` order), ``limit`` in all, in ``class_names`` order."""
    if len(class_names) <= limit:
        return list(class_names)
    errors = sum((table["true_label"] != table["predicted_label"]).groupby(table["true_label"]).sum()
                 for table in predictions_by_model.values())
    ranked = sorted(class_names, key=lambda name: (-int(errors.get(name, 0)), class_names.index(name)))
    chosen = {rare_class, *[name for name in ranked if name != rare_class][: limit - 1]}
    return [name for name in class_names if name in chosen]


def explain_models(models: dict[str, tuple[keras.Model, pd.DataFrame]], class_names: list[str],
                   rare_class: str, image_size, top_k: int = 3) -> Explanations:
    """Explanations of the models (by display name: the trained model and its test predictions, all on the
    same test images): the examples (of `classes_to_show`), top losses, confusions and disagreements, and
    Grad-CAM maps of every image shown, each for the class the model predicted (after its post-processing)."""

    predictions = {name: table for name, (_, table) in models.items()}
    examples = explanation_examples(predictions, classes_to_show(predictions, class_names, rare_class), rare_class)
    losses = top_losses(predictions, top_k)
    relpaths = list(dict.fromkeys([*examples["relpath"], *losses["relpath"]]))
    paths = side_by_side(predictions).loc[relpaths, "path"]
    pixels = np.stack([np.asarray(load_rgb(path, image_size)) for path in paths]).astype("float32")
    maps = {}
    for name, (model, table) in models.items():
        predicted = table.set_index("relpath").loc[relpaths, "predicted_label"].map(class_names.index)
        maps[name] = grad_cam(model, pixels, predicted.to_numpy())
    confused = pd.concat([most_confused(table).assign(model=name) for name, table in predictions.items()],
                         ignore_index=True)
    return Explanations(examples, losses, confused[["model", "true_label", "predicted_label", "count"]],
                        discordant_images(predictions), maps, relpaths)


_EXPLANATION_TABLES = ("examples", "top_losses", "most_confused", "discordant")


def compute_explanations(run: StepRun) -> Explanations:
    """`explain_models` of the study's models (`lib.core.study.MODELS`) in the first round of the run at
    ``run.paths`` (its rounds: ``run.params``' evaluation), at the params' image size, the rare class being the
    one with the fewest images in its split; the tables written as CSV files in the run's ``comparison/``
    folder, the maps as one .npz."""
    params, paths = run.params, run.paths
    first = paths.round(evaluation_rounds(params.evaluation).first.name)
    results = load_results(first)
    models = {model.title: (load_trained_model(first.model(model.name).model), results[model.name].predictions)
              for model in MODELS.values()}
    rare_class = read_split(first.split_manifest)["label"].value_counts().idxmin()
    explanations = explain_models(models, next(iter(results.values())).class_names, rare_class,
                                  params.data.image_size)
    paths.comparison_dir.mkdir(parents=True, exist_ok=True)
    for name in _EXPLANATION_TABLES:
        getattr(explanations, name).to_csv(paths.comparison_table(name), index=False)
    names = list(explanations.maps)
    np.savez_compressed(paths.grad_cam_maps, models=np.array(names), relpaths=np.array(explanations.relpaths),
                        **{f"map_{i}": explanations.maps[m].astype("float16") for i, m in enumerate(names)})
    return explanations


def read_explanations(run: StepRun) -> Explanations:
    """What `compute_explanations` wrote in ``run.paths`` (maps as float32)."""
    paths = run.paths
    if not paths.grad_cam_maps.is_file():
        raise FileNotFoundError(f"{paths.grad_cam_maps} is missing: run the comparison notebook first")
    tables = {name: pd.read_csv(paths.comparison_table(name), keep_default_na=False, na_values=[""])
              for name in _EXPLANATION_TABLES}
    with np.load(paths.grad_cam_maps) as stored:
        maps = {str(m): stored[f"map_{i}"].astype("float32") for i, m in enumerate(stored["models"])}
        relpaths = [str(r) for r in stored["relpaths"]]
    return Explanations(**tables, maps=maps, relpaths=relpaths)


def photos_and_overlays(table: pd.DataFrame, explanations: Explanations, image_size) -> tuple[list, dict]:
    """The photos of ``table``'s images (its ``path`` column) at the models' input size, and each model's
    Grad-CAM overlay of each: what `lib.report.plots.grad_cam_grid` draws."""

    photos = [np.asarray(load_rgb(path, image_size)) for path in table["path"]]
    overlays = {model: [overlay(photo, heat) for photo, heat in zip(photos, maps)]
                for model, maps in explanations.maps_of(table).items()}
    return photos, overlays
