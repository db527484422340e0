"""MobileNetV2's frozen, globally pooled features: one extractor for every use.

The audit compares images by these features (near-duplicate pairs: `audit_features`), and the linear probe
(`lib.training.probe`) classifies them. Both cut the study's own MobileNetV2 at its pooling
layer, so both see an image exactly as the fine-tuned model's frozen base does.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from lib.core import progress
from lib.core.config import MobileNetV2Params
from lib.data.images import load_rgb
from lib.training.models import build_mobilenet_v2


class ImagesPredicted(keras.callbacks.Callback):
    """Counts the images ``predict`` has done, batch by batch, into a `lib.core.progress.ImagesDone` (``start``:
    the images done before this ``predict``)."""

    def __init__(self, images: progress.ImagesDone, batch_size: int, count: int, start: int = 0):
        super().__init__()
        self.images, self.batch_size, self.count, self.start = images, batch_size, count, start

    def on_predict_batch_end(self, batch, logs=None):
        self.images.update(self.start + min((batch + 1) * self.batch_size, self.count))


def feature_extractor(image_size: tuple[int, int], weights: str | None = "imagenet"):
    """The study's own MobileNetV2 (`lib.training.models.build_mobilenet_v2`: its input scaling, its base), cut
    at its pooling layer: pixels in, 1,280 frozen features out. The head it is cut from is never used, so
    the features do not depend on the number of classes or the head's params; with random weights
    (``weights=None``) they depend on Keras' seed when this is called."""
    model, _ = build_mobilenet_v2(2, image_size, MobileNetV2Params(weights=weights))
    return keras.Model(model.inputs, model.get_layer("pool").output, name="frozen_pooled_features")


def pooled_features(images: np.ndarray, weights: str | None = "imagenet", batch_size: int = 32) -> np.ndarray:
    """MobileNetV2's globally pooled features (1,280 per image) of uint8 images (N, H, W, 3).

    The images go in as uint8 and each batch is cast to float32 inside the model: the whole
    set as float32 would take 4x the bytes (1.1 GB for the default 1,830 images at 224 px).
    """
    extractor = feature_extractor(images.shape[1:3], weights)
    return extractor.predict(np.asarray(images, dtype=np.uint8), batch_size=batch_size, verbose=0)


FEATURES_IN_MEMORY_BYTES = 256 * 2**20  # larger feature arrays are memory-mapped files


def streamed_features(paths, image_size: tuple[int, int], weights: str | None = "imagenet",
                      spill_dir: Path | None = None, chunk: int = 256, batch_size: int = 32) -> np.ndarray:
    """`pooled_features` of image files, decoded ``chunk`` at a time: the decoded set is never in memory.

    Features over ``FEATURES_IN_MEMORY_BYTES`` go to ``spill_dir/features.npy``, memory-mapped
    (50,000 images take 256 MB), when a ``spill_dir`` is given.
    """
    paths = list(paths)
    extractor = feature_extractor(image_size, weights)
    shape = (len(paths), extractor.output_shape[-1])
    if spill_dir is not None and shape[0] * shape[1] * 4 > FEATURES_IN_MEMORY_BYTES:
        Path(spill_dir).mkdir(parents=True, exist_ok=True)
        spill = Path(spill_dir) / "features.npy"
        spill.unlink(missing_ok=True)  # a new file: an old one may be hard-linked into another run's folder
        features = np.lib.format.open_memmap(spill, "w+", np.float32, shape)
    else:
        features = np.empty(shape, dtype=np.float32)
    images = progress.ImagesDone("image features", len(paths))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in tqdm(range(0, len(paths), chunk), desc="Image features", unit="chunk"):
            pixels = np.stack(list(pool.map(lambda p: np.asarray(load_rgb(p, image_size), dtype=np.uint8),
                                            paths[start : start + chunk])))
            counting = ImagesPredicted(images, batch_size, len(pixels), start=start)
            features[start : start + len(pixels)] = extractor.predict(pixels, batch_size=batch_size, verbose=0,
                                                                      callbacks=[counting])
    return features


def audit_features(images, params, spill_dir: Path | None = None) -> np.ndarray:
    """`streamed_features` of the usable rows of an audit's image table (`lib.data.audit.inspect_records`), as
    `lib.data.audit.duplicate_pairs` compares them: at ``data.image_size``, with ``mobilenet_v2.weights``."""
    usable = images.loc[images["usable"], "path"]
    return streamed_features(usable, params.data.image_size, params.mobilenet_v2.weights, spill_dir=spill_dir)
