"""What MobileNetV2's two training phases train on: pixels, or cached activations of its frozen layers.

A frozen layer in inference mode gives the same output for the same input, so recomputing
the frozen part of MobileNetV2 on every image in every epoch (what the original study did)
repeats identical work. With ``mobilenet_v2.activation_cache`` on (the default), each input
goes through the frozen layers once:

- phase 1 (head only) trains on the base's pooled output (1,280 numbers per image);
- phase 2 (the last ``fine_tune_layers`` layers unfrozen) trains those layers and the head on
  the activations just below them (7 x 7 x 160 per image at 224 px). When the whole base is
  fine-tuned (``fine_tune_layers: all``, the strong protocol) nothing stays frozen below it, so
  phase 2 trains on pixels, with fresh random transforms every epoch.

Training images are augmented, so "the same input" means the same augmented view: the cache
holds ``augmented_views`` random views of every training image, and epoch *e* trains on view
*e* mod ``augmented_views``. That is the one thing that differs from the plain path, where
every epoch draws fresh random transforms: the model sees ``augmented_views`` variants of
each image instead of one per epoch. Validation and test images are never augmented, so for
them the cache is exact. The trained layers are the model's own (the phase models share them),
so the saved model is the ordinary pixels-in model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from lib.core import progress
from lib.core.config import MobileNetV2Params
from lib.core.devices import on_this_process
from lib.data.augmentation import Augmentation
from lib.data.inputs import Batches, image_batches
from lib.data.pixels import SplitData
from lib.training.features import ImagesPredicted


@dataclass(frozen=True)
class RoundInputs:
    """A round's data as both phases train on it: what this module needs, and nothing else of the round's
    (`lib.training.experiment.Experiment.round_inputs` makes it)."""

    train: SplitData
    val: SplitData
    n_classes: int
    image_size: tuple[int, int]
    batch_size: int
    seed: int  # the round's: each epoch's order of the cached views
    augmenter: Augmentation | None  # the training images' random transforms (None: not augmented)
    threads: int  # worker threads that prepare batches
    pixel_stream: Callable[[object], Batches]  # the augmented training batches in a minority method's order
    val_stream: Batches
    shard: tuple[int, int] = (0, 1)  # (this process, processes): the share of each training batch it feeds


def _flat(tensors) -> list:
    return tensors if isinstance(tensors, list) else [tensors]


def frozen_boundary(base: keras.Model, n_top_layers: int) -> int:
    """Index of the first layer above the cut: the last ``n_top_layers`` layers or a few more.

    The cut must be crossed by exactly one tensor (it becomes the cached input). Inside a
    residual block two tensors cross it, so the cut moves down to the start of the block;
    the extra layers above it are frozen and simply run every epoch, which changes nothing.
    ``n_top_layers`` may be "all": the cut is then below the first layer (0).
    """
    if n_top_layers == "all" or n_top_layers >= len(base.layers):
        return 0
    if n_top_layers <= 0:
        return len(base.layers)
    made_by = {id(tensor): position for position, layer in enumerate(base.layers) for tensor in _flat(layer.output)}
    for cut in range(len(base.layers) - n_top_layers, 0, -1):
        crossing = {
            id(tensor)
            for layer in base.layers[cut:]
            for tensor in _flat(layer.input)
            if made_by[id(tensor)] < cut
        }
        if len(crossing) == 1:
            return cut
    raise ValueError(f"no single-tensor cut below the last {n_top_layers} layers of {base.name}")


def split_base(base: keras.Model, n_top_layers) -> tuple[keras.Model | None, keras.Model | None]:
    """``(bottom, top)``: the base below and above `frozen_boundary` (top is None when nothing is fine-tuned,
    bottom is None when all of it is).

    Both share the base's layers: training ``top`` trains the base itself.
    """
    cut = frozen_boundary(base, n_top_layers)
    if cut == len(base.layers):
        return base, None
    if cut == 0:
        return None, base
    cut_tensor = _flat(base.layers[cut].input)[0]
    return keras.Model(base.input, cut_tensor, name="frozen_bottom"), keras.Model(cut_tensor, base.output, name="top")


def _head(model: keras.Model, x):
    """The model's own classifier layers (after pooling) applied to ``x``."""
    for name in ("dense", "dropout", "probabilities"):
        x = model.get_layer(name)(x)
    return x


@dataclass(frozen=True)
class PhaseInputs:
    """What one phase's ``fit`` trains (`model`) and on what (`train`, `val`)."""

    model: keras.Model
    train: object
    val: object


class PixelInputs:
    """The plain path: both phases train the whole model on pixels; the frozen layers run every epoch."""

    def __init__(self, data: RoundInputs, model: keras.Model):
        self.data, self.model = data, model

    def bind(self, model: keras.Model, base: keras.Model) -> PixelInputs:
        """The same inputs for another model of the same architecture."""
        return PixelInputs(self.data, model)

    def head_phase(self, method) -> PhaseInputs:
        return PhaseInputs(self.model, self.data.pixel_stream(method), self.data.val_stream)

    fine_tune_phase = head_phase

    def summary(self) -> dict:
        return {"activation_cache": False}

    def clean_pooled(self) -> dict[str, np.ndarray]:
        """Nothing is cached on this path (see `ActivationCache.clean_pooled`)."""
        return {}


class ActivationCache:
    """The frozen layers' outputs for every training view and validation image, computed once.

    ``pooled``: the base's pooled output (phase 1's input); ``below_top``: the activations
    just below the fine-tuned layers (phase 2's input; not cached when the whole base is fine-tuned,
    since phase 2 then reads pixels). Each is ``(views, N, ...)`` float32.
    """

    def __init__(self, data: RoundInputs, mobilenet: MobileNetV2Params, model: keras.Model, base: keras.Model):
        self.data, self.model, self.fine_tune_layers = data, model, mobilenet.fine_tune_layers
        self.views = mobilenet.augmented_views
        self.bottom, self.top = split_base(base, self.fine_tune_layers)
        # The base's weights as cached (phase 2 of a whole-base fine-tune changes them): what `bind` gives the next
        # model, so that the cached pooled features are its own even without ImageNet weights.
        self.frozen_weights = base.get_weights() if self.bottom is None else None
        self.augmented = data.augmenter is not None
        if not self.augmented:
            self.views = 1  # without augmentation every view would be the same image
        start = time.perf_counter()
        extract = self._extractor(data.image_size)
        images = progress.ImagesDone("activation cache", self.views * len(data.train) + len(data.val))
        self.train = self._run(extract, data.train, data.augmenter, self.views, "train", images)
        self.val = self._run(extract, data.val, None, 1, "val", images)
        self.seconds = time.perf_counter() - start

    def _extractor(self, image_size) -> keras.Model:
        pixels = keras.Input(shape=(*image_size, 3), name="pixels")
        scaled = self.model.get_layer("mobilenet_v2_preprocess")(pixels)
        if self.bottom is None:  # the whole base is fine-tuned: only phase 1's pooled features are cached
            return keras.Model(pixels, [self.model.get_layer("pool")(self.top(scaled))], name="frozen_features")
        below_top = self.bottom(scaled)
        base_output = self.top(below_top) if self.top is not None else below_top
        return keras.Model(pixels, [below_top, self.model.get_layer("pool")(base_output)], name="frozen_features")

    def _run(self, extract, split: SplitData, augmenter, views: int, name: str,
             images: progress.ImagesDone) -> dict[str, np.ndarray]:
        """Both cached activations of ``views`` (augmented) views of every image of a split, each view
        written into arrays allocated once (no second copy of the whole cache); ``images`` counts them."""
        cached = None
        for view in range(views):
            start = time.perf_counter()
            batches = image_batches(split.images, self.data.batch_size, augmenter, view=view, threads=self.data.threads)
            counting = ImagesPredicted(images, self.data.batch_size, len(split), start=images.done)
            outputs = keras.tree.flatten(extract.predict(batches, verbose=0, callbacks=[counting]))
            if cached is None:
                cached = [np.empty((views, *output.shape), dtype=output.dtype) for output in outputs]
            for array, output in zip(cached, outputs):
                array[view] = output
            seconds = time.perf_counter() - start
            print(f"frozen activations cached: {name} split, view {view + 1} of {views}, "
                  f"{len(split)} images in {seconds:.0f} s ({len(split) / seconds:.0f} images/s)", flush=True)
        names = ["pooled"] if len(cached) == 1 else ["below_top", "pooled"]
        return dict(zip(names, cached)) | {"labels": split.labels}

    def bind(self, model: keras.Model, base: keras.Model) -> ActivationCache:
        """These cached activations for another model built the same way (its frozen layers
        hold the same weights, so their outputs are the same): only its top and head train."""
        bound = copy.copy(self)
        bound.model = model
        bound.bottom, bound.top = split_base(base, self.fine_tune_layers)
        # Frozen layers never train, so the cached model's are still as built; copying them
        # makes the cache exact for the new model even without ImageNet weights (random init).
        if self.bottom is None:
            base.set_weights(self.frozen_weights)
        else:
            for cached_layer, new_layer in zip(self.bottom.layers, bound.bottom.layers):
                new_layer.set_weights(cached_layer.get_weights())
        return bound

    def _phase(self, key: str, model: keras.Model, method) -> PhaseInputs:
        data = self.data
        return PhaseInputs(
            model,
            Batches(self.train[key], self.train["labels"], data.n_classes, data.batch_size, method, data.seed,
                    threads=data.threads, shard=data.shard),
            Batches(self.val[key], self.val["labels"], data.n_classes, data.batch_size, threads=data.threads),
        )

    def head_phase(self, method) -> PhaseInputs:
        """Phase 1: the head alone, on the pooled output of the frozen base."""
        pooled = keras.Input(shape=self.train["pooled"].shape[2:], name="pooled_features")
        return self._phase("pooled", keras.Model(pooled, _head(self.model, pooled), name="head_on_cache"), method)

    def fine_tune_phase(self, method) -> PhaseInputs:
        """Phase 2: the unfrozen top of the base and the head, on the activations below them."""
        if self.top is None:
            return self.head_phase(method)
        if self.bottom is None:  # the whole base trains: on pixels, freshly augmented every epoch
            return PhaseInputs(self.model, self.data.pixel_stream(method), self.data.val_stream)
        below = keras.Input(shape=self.train["below_top"].shape[2:], name="below_top")
        x = self.model.get_layer("pool")(self.top(below))
        return self._phase("below_top", keras.Model(below, _head(self.model, x), name="top_on_cache"), method)

    def clean_pooled(self) -> dict[str, np.ndarray]:
        """The base's pooled output of the un-augmented images cached here, by split: validation always,
        training only when it is not augmented. What the linear probe (`lib.training.probe`) reuses: these were
        computed before any training, so they are the frozen base's, whatever fine-tuning did since."""
        cached = {"val": self.val["pooled"][0]}
        if not self.augmented:
            cached["train"] = self.train["pooled"][0]
        return cached

    def summary(self) -> dict:
        """What was cached, for the notebook and the report."""
        arrays = [split[key] for split in (self.train, self.val) for key in ("below_top", "pooled") if key in split]
        return {
            "activation_cache": True,
            "augmented_views": self.views,
            "cut_below_layer": (None if self.top is None else "none: the whole base trains on pixels"
                                if self.bottom is None else self.top.layers[1].name),
            "cached_megabytes": round(sum(a.nbytes for a in arrays) / 1e6, 1),
            "caching_seconds": round(self.seconds, 1),
        }


def phase_inputs(data: RoundInputs, mobilenet: MobileNetV2Params, model: keras.Model,
                 base: keras.Model) -> ActivationCache | PixelInputs:
    """The inputs of both phases as the params ask: cached activations (default) or pixels."""
    if not mobilenet.activation_cache:
        return PixelInputs(data, model)
    # Across processes the frozen layers run on this process's copy (its outputs stay here), then the cache is
    # bound to the model that trains over every process's devices
    with on_this_process(model) as local:
        cache = ActivationCache(data, mobilenet, local, local.get_layer(base.name))
    return cache if local is model else cache.bind(model, base)


class ReusedInputs:
    """What the trainings reused from an interrupted run were trained on (no cache is rebuilt to say so)."""

    def __init__(self, summary: dict):
        self._summary = summary

    def summary(self) -> dict:
        return self._summary

    def clean_pooled(self) -> dict[str, np.ndarray]:
        """Nothing was cached in this process (see `ActivationCache.clean_pooled`)."""
        return {}
