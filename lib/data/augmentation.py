"""The training images' augmentation, on the host: one composed affine transform per image (rotation,
shifts, shear, zoom, flip), applied by OpenCV in one resampling, as the original study's Keras
``ImageDataGenerator`` did. Keras 3's preprocessing layers resample once per transform and are far slower
(at 224 px on the project's CPU, 13-15x under TensorFlow, ~80x under JAX; benchmarks/RESULTS.md, "where
the augmentation runs"). The random draws depend only on the seed, the epoch and the batch, never on
which thread computes a batch or when.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from lib.core.config import AugmentationParams


def one_opencv_thread_per_warp(environ=os.environ) -> None:
    """Run each OpenCV warp on the thread that calls it, unless ``OPENCV_FOR_THREADS_NUM`` (OpenCV's own setting,
    read at import) chooses otherwise.

    The batch workers already warp several batches at once; OpenCV's pool would split every warp over
    all CPUs again (workers x CPUs threads, beside TensorFlow's pool where the CPU trains the model).
    A warp's pixels are the same with any number of threads. OpenCV's setting is process-wide.
    """
    if "OPENCV_FOR_THREADS_NUM" not in environ:
        cv2.setNumThreads(1)


def _affine(a, b, c, d, e, f) -> np.ndarray:
    """Stacked 3 x 3 affine matrices ``[[a, b, c], [d, e, f], [0, 0, 1]]`` (each argument a scalar or one
    value per image)."""
    a, b, c, d, e, f = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, c, d, e, f)))
    zero, one = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([a, b, c], -1), np.stack([d, e, f], -1), np.stack([zero, zero, one], -1)], -2)


@dataclass(frozen=True)
class Augmentation:
    """The study's random transforms, from a `lib.core.config.AugmentationParams`: one affine map per image
    composed of a rotation, shifts, a shear, a zoom and a horizontal flip, resampled once (bilinear)
    by OpenCV on the host, edges extended by their nearest pixel (``fill_mode="nearest"``,
    ImageDataGenerator's default, so edges look as they did).

    Each transform draws as ImageDataGenerator and Keras' preprocessing layers did: an angle
    uniform in ±``rotation_degrees``; shifts uniform in ±``width_shift`` of the width and
    ±``height_shift`` of the height; zoom factors uniform in [1 - ``zoom``, 1 + ``zoom``], one
    per axis (above 1 zooms out); a mirror image half the time. One difference, stated in the
    report: ImageDataGenerator reads ``shear_range=0.1`` as 0.1 *degrees*; here, as in Keras 3's
    RandomShear, 0.1 is a shear of up to 10 % of the image: x and y shear factors uniform in
    [0, ``shear``], with one random sign, a visible transform, which is what the study's
    authors evidently intended. All maps are about the image's centre.

    A batch's draws come from ``default_rng([seed, epoch, batch])``: the same epoch and batch
    give the same images, whichever thread computes them.
    """

    params: AugmentationParams
    seed: int

    def inverse_maps(self, rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
        """``count`` random maps (count, 2, 3) from output pixel (x, y) to the input pixel it reads."""
        p = self.params
        angle = np.deg2rad(rng.uniform(-p.rotation_degrees, p.rotation_degrees, count))
        shift_x = rng.uniform(-p.width_shift, p.width_shift, count) * width
        shift_y = rng.uniform(-p.height_shift, p.height_shift, count) * height
        shear_sign = np.where(rng.random(count) < 0.5, -1.0, 1.0)
        shear_x, shear_y = rng.uniform(0, p.shear, (2, count)) * shear_sign
        zoom_x, zoom_y = rng.uniform(1 - p.zoom, 1 + p.zoom, (2, count))
        mirror = np.where(p.horizontal_flip & (rng.random(count) < 0.5), -1.0, 1.0)
        centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
        maps = (
            _affine(1, 0, centre_x, 0, 1, centre_y)                                   # back from the centre
            @ _affine(np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0)  # rotation
            @ _affine(1, 0, shift_x, 0, 1, shift_y)                                   # shifts
            @ _affine(1, shear_x, 0, shear_y, 1, 0)                                   # shear
            @ _affine(zoom_x, 0, 0, 0, zoom_y, 0)                                     # zoom
            @ _affine(mirror, 0, 0, 0, 1, 0)                                          # flip
            @ _affine(1, 0, -centre_x, 0, 1, -centre_y)                               # to the centre
        )
        return maps[:, :2]

    def __call__(self, images: np.ndarray, epoch: int, batch: int, draws: tuple[int, int] | None = None) -> np.ndarray:
        """A batch (N, H, W, C), transformed: float32, each image by its own map, drawn for this epoch and batch.

        ``draws`` (first, total): the images are rows first .. first + N of a batch of ``total`` (a process's share,
        `Batches`), and get those rows' maps of the whole batch's draws.
        """
        images = np.asarray(images, dtype=np.float32)
        count, height, width = images.shape[:3]
        first, total = draws or (0, count)
        maps = self.inverse_maps(np.random.default_rng([self.seed, epoch, batch]), total, height, width)[first:first + count]
        out = np.empty_like(images)
        for image, inverse_map, result in zip(images, maps, out):
            result[:] = cv2.warpAffine(image, inverse_map, (width, height),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_REPLICATE).reshape(result.shape)
        return out


def build_augmentation(augmentation: AugmentationParams, seed: int) -> Augmentation | None:
    """The study's random transforms, from a `lib.core.config.AugmentationParams` (None when all are off)."""
    a = augmentation
    if not (a.rotation_degrees or a.width_shift or a.height_shift or a.shear or a.zoom or a.horizontal_flip):
        return None
    return Augmentation(augmentation, seed)


def augmented_views(image, augmenter: Augmentation | None, count: int) -> list:
    """``count`` random augmentations of one image (uint8 array, H x W x 3), for a preview."""
    if augmenter is None:
        return [np.asarray(image, dtype=np.uint8)] * count
    views = augmenter(np.repeat(np.asarray(image)[None], count, axis=0), epoch=0, batch=0)
    return [np.clip(np.rint(view), 0, 255).astype("uint8") for view in views]
