"""The input pipeline: the study's augmentation as Keras preprocessing layers.

The original study used Keras' legacy ``ImageDataGenerator``; here the same transforms
are Keras 3 preprocessing layers, which run inside tf.data and only ever on training data.
"""

from __future__ import annotations

import keras
from keras import layers


def build_augmentation(augmentation, seed: int) -> keras.Sequential:
    """The study's random transforms, from a `lib.config.AugmentationParams`.

    ``fill_mode="nearest"`` is ImageDataGenerator's default, so edges look as they did.
    One difference, stated in the report: ImageDataGenerator reads ``shear_range=0.1``
    as 0.1 *degrees*; Keras 3's RandomShear reads 0.1 as a shear of up to 10 % of the
    image, a visible transform, which is what the study's authors evidently intended.
    """
    steps: list[layers.Layer] = []
    if augmentation.rotation_degrees:
        steps.append(layers.RandomRotation(augmentation.rotation_degrees / 360.0, fill_mode="nearest", seed=seed))
    if augmentation.width_shift or augmentation.height_shift:
        steps.append(
            layers.RandomTranslation(
                augmentation.height_shift, augmentation.width_shift, fill_mode="nearest", seed=seed + 1
            )
        )
    if augmentation.shear:
        steps.append(
            layers.RandomShear(
                x_factor=augmentation.shear, y_factor=augmentation.shear, fill_mode="nearest", seed=seed + 2
            )
        )
    if augmentation.zoom:
        steps.append(layers.RandomZoom(augmentation.zoom, augmentation.zoom, fill_mode="nearest", seed=seed + 3))
    if augmentation.horizontal_flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 4))
    return keras.Sequential(steps, name="augmentation")


def augmented_views(image, augmenter: keras.Sequential, count: int) -> list:
    """``count`` random augmentations of one image (uint8 array, H x W x 3), for a preview."""
    import numpy as np

    batch = np.repeat(np.asarray(image, dtype="float32")[None], count, axis=0)
    views = keras.ops.convert_to_numpy(augmenter(batch, training=True))
    return [np.clip(view, 0, 255).astype("uint8") for view in views]
