"""The models' inputs: split manifest -> decoded arrays -> batches, augmenting training batches only.

Each image is decoded once, with PIL (upright, RGB, resized to the study's input size), and
the decoded array is kept on disk (`cached_pixels`), so that later notebooks and re-runs
read it instead of decoding again. `training_stream` then serves one epoch after another in
the order the minority-class method asks for (`lib.minority.MinorityMethod.epoch_rows`),
augmented; `Batches` serves any array (pixels or `lib.activation_cache`'s cached
activations) in that order, converting a batch at a time, on any Keras backend (no tf.data). The original study used Keras' legacy ``ImageDataGenerator``;
here the same transforms are Keras 3 preprocessing layers. Validation and test data never
pass through them, and nothing from those splits ever reaches training.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import layers
from tqdm.auto import tqdm

from lib.devices import batch_rows
from lib.images import load_rgb
from lib.sources import SPLITS


@dataclass(frozen=True)
class SplitData:
    """One split, decoded: uint8 images (N, H, W, 3; an array, or `PixelRows` read from the pixel cache on
    demand), integer labels (N,), and its manifest rows."""

    images: np.ndarray
    labels: np.ndarray
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class StudyData:
    """The three splits and the class names (sorted; a label's index is its position)."""

    class_names: list[str]
    train: SplitData
    val: SplitData
    test: SplitData


def decode_images(paths, image_size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Decode and resize every image once (in parallel, with a progress bar): uint8 (N, H, W, 3), written into
    ``out`` when given (e.g. a memory-mapped file)."""
    def decode(path):
        return np.asarray(load_rgb(path, image_size), dtype=np.uint8)

    paths = list(paths)
    if out is None:
        out = np.empty((len(paths), *image_size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for index, array in enumerate(
            tqdm(pool.map(decode, paths), total=len(paths), desc="Decoding images", unit="img")
        ):
            out[index] = array
    return out


def pixel_cache_key(paths, image_size: tuple[int, int]) -> str:
    """Names the decoded array of these files at this size: their paths in order, sizes and modification times."""
    digest = hashlib.sha256(f"{image_size[0]}x{image_size[1]}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"\n{path}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cached_pixels(paths, image_size: tuple[int, int], cache_dir: Path | None) -> np.ndarray:
    """`decode_images`, read from ``cache_dir`` when these files were decoded at this size before.

    The cache is one ``.npy`` file per (file list, size) key, decoded straight into the file (so
    that the decoded set is never in memory all at once) and put in place atomically; it is
    returned memory-mapped. Older entries in ``cache_dir`` are removed when a new one is
    written. None: no cache.
    """
    paths = list(paths)
    if cache_dir is None:
        return decode_images(paths, image_size)
    cache_dir = Path(cache_dir)
    file = cache_dir / f"pixels-{image_size[0]}x{image_size[1]}-{pixel_cache_key(paths, image_size)}.npy"
    if file.is_file():
        return np.load(file, mmap_mode="r")
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob("pixels-*.npy"):
        stale.unlink()
    partial = file.with_suffix(".partial")
    pixels = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), *image_size, 3))
    decode_images(paths, image_size, out=pixels)
    pixels.flush()
    del pixels
    os.replace(partial, file)
    return np.load(file, mmap_mode="r")


class PixelRows:
    """Some rows of the pixel cache file, read from disk when indexed: a split's decoded images without holding
    them in this process's memory (the operating system's page cache keeps the file). Indexes like an array
    (an int, a slice or an array of positions) and converts to one (``np.asarray``)."""

    def __init__(self, file: Path, rows: np.ndarray):
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, self.dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran_order:
            raise ValueError(f"{file}: a Fortran-ordered array cannot be read by rows")
        self.file, self.rows, self.row_shape = Path(file), np.asarray(rows, dtype=np.int64), tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.row_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        picked = self.rows[index]
        out = np.empty((np.size(picked), *self.row_shape), dtype=self.dtype)
        with open(self.file, "rb") as handle:
            for position, row in enumerate(np.atleast_1d(picked)):
                handle.seek(self.offset + int(row) * self.row_bytes)
                handle.readinto(out[position])
        return out[0] if np.ndim(picked) == 0 else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        return self[:].astype(dtype)


def load_study_data(manifest: pd.DataFrame, image_size: tuple[int, int], cache_dir: Path | None = None) -> StudyData:
    """The manifest's images, decoded once (or read from ``cache_dir``), split by split.

    The cache holds the files in path order, whatever the manifest's order, so that every
    evaluation round (each its own split of the same images) reads the same cache; each split
    reads its rows from it when a batch needs them (`PixelRows`), so the decoded dataset is
    never held in memory. Without ``cache_dir``, the images are decoded into memory.
    """
    class_names = sorted(manifest.loc[manifest["split"] == "train", "label"].unique())
    index_of = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(manifest["label"]) - set(class_names))
    if unknown:
        raise ValueError(f"class(es) {unknown} appear in validation/test but not in training")
    paths = manifest["path"].to_numpy(dtype=str)
    in_path_order = np.argsort(paths, kind="stable")
    cache = cached_pixels(paths[in_path_order], image_size, cache_dir)
    cache_row = np.empty(len(paths), dtype=np.int64)  # the cache row of each manifest row
    cache_row[in_path_order] = np.arange(len(paths))
    splits = {}
    for split in SPLITS:
        in_split = (manifest["split"] == split).to_numpy()
        rows = manifest[in_split].reset_index(drop=True)
        labels = rows["label"].map(index_of).to_numpy(dtype=np.int64)
        images = (PixelRows(Path(cache.filename), cache_row[in_split]) if isinstance(cache, np.memmap)
                  else cache[cache_row[in_split]])
        splits[split] = SplitData(images, labels, rows)
    return StudyData(class_names, splits["train"], splits["val"], splits["test"])


class OneView:
    """``images`` (an array or `PixelRows`) as the one view of `Batches`' ``(views, N, ...)`` inputs, read a
    batch of rows at a time."""

    def __init__(self, images):
        self.images = images

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, *self.images.shape)

    def __getitem__(self, key) -> np.ndarray:
        _, rows = key  # every row is of view 0
        return np.asarray(self.images[rows])


class Batches(keras.utils.PyDataset):
    """Batches of ``(inputs[view, row], one-hot label)`` from inputs shaped ``(views, N, ...)`` (an array, or
    `OneView` of a split's images): the one
    data path of training, validation and prediction, on every Keras backend.

    With a ``seed``, each epoch's rows come from ``method.epoch_rows`` (shuffled, or every class
    drawn equally often), drawn afresh from ``default_rng([seed, epoch])``: a shuffled epoch *e*
    reads view *e* mod views; a balanced draw reads a random view, so that the repeats of a rare
    image are not all the same augmented view. Without a seed: every row once, in order, view 0
    (validation, prediction). ``augment``, if given, transforms each float32 batch (training, and
    the augmented views `lib.activation_cache` computes). Without ``labels``, batches are inputs
    only (prediction). A batch is converted to float32 when it is served, so that uint8 pixels
    are never held as float32 all at once.
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray | None, n_classes: int, batch_size: int,
                 method=None, seed: int | None = None, augment=None):
        super().__init__()
        if seed is not None and method is None:
            raise ValueError("a seeded (training) stream needs the minority-class method that orders its epochs")
        self.inputs, self.labels, self.batch_size = inputs, labels, batch_size
        self.n_classes, self.method, self.seed, self.augment = n_classes, method, seed, augment
        self.targets = None if labels is None else np.eye(n_classes, dtype="float32")[labels]
        self.epoch, self._epochs_begun = 0, 0
        self._order, self._views = self._draw()

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's rows, in order, and the view each is read from."""
        views, count = self.inputs.shape[:2]
        if self.seed is None:
            return np.arange(count), np.zeros(count, dtype=int)
        rng = np.random.default_rng([self.seed, self.epoch])
        rows = self.method.epoch_rows(self.labels, self.n_classes, rng)
        if self.method.balances_sampling:
            return rows, rng.integers(0, views, count)
        return rows, np.full(count, self.epoch % views)

    @property
    def view(self) -> int:
        return self.epoch % self.inputs.shape[0]

    def _batches(self) -> list[slice]:
        """Each batch's positions in the epoch's order; split over several devices, shaped as
        `lib.devices.batch_rows` says (a training epoch then leaves out fewer rows than devices)."""
        return batch_rows(self.inputs.shape[1], self.batch_size, training=self.seed is not None)

    def __len__(self) -> int:
        return len(self._batches())

    def __getitem__(self, index: int):
        batch = self._batches()[index]
        rows = self._order[batch]
        inputs = self.inputs[self._views[batch], rows].astype("float32", copy=False)
        if self.augment is not None:
            inputs = keras.ops.convert_to_numpy(self.augment(inputs, training=True))
        return inputs if self.targets is None else (inputs, self.targets[rows])

    def on_epoch_begin(self) -> None:
        # Keras calls this once at the start of every epoch (on_epoch_end also runs on resets)
        self.epoch, self._epochs_begun = self._epochs_begun, self._epochs_begun + 1
        self._order, self._views = self._draw()


def training_stream(data: SplitData, n_classes: int, batch_size: int, method, seed: int,
                    augmenter: keras.Sequential | None) -> Batches:
    """The augmented training batches of one split under a minority-class method, epoch after epoch."""
    return Batches(OneView(data.images), data.labels, n_classes, batch_size, method, seed, augmenter)


def evaluation_stream(data: SplitData, n_classes: int, batch_size: int) -> Batches:
    """Every image of a split once, in order, not augmented (validation)."""
    return Batches(OneView(data.images), data.labels, n_classes, batch_size)


def image_batches(images: np.ndarray, batch_size: int, augmenter: keras.Sequential | None = None) -> Batches:
    """Images only, in order, for ``predict`` (augmented by ``augmenter`` if given)."""
    return Batches(OneView(images), None, 1, batch_size, augment=augmenter)


def build_augmentation(augmentation, seed: int) -> keras.Sequential | None:
    """The study's random transforms, from a `lib.config.AugmentationParams` (None when all are off).

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
    return keras.Sequential(steps, name="augmentation") if steps else None


def augmented_views(image, augmenter: keras.Sequential | None, count: int) -> list:
    """``count`` random augmentations of one image (uint8 array, H x W x 3), for a preview."""
    if augmenter is None:
        return [np.asarray(image, dtype=np.uint8)] * count
    batch = np.repeat(np.asarray(image, dtype="float32")[None], count, axis=0)
    views = keras.ops.convert_to_numpy(augmenter(batch, training=True))
    return [np.clip(view, 0, 255).astype("uint8") for view in views]
