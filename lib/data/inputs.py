"""The models' inputs: split manifest -> decoded arrays -> batches, augmenting training batches only.

Each image is decoded once, with PIL (upright, RGB, resized to the study's input size), and
the decoded array is kept on disk (`cached_pixels`), so that later notebooks and re-runs
read it instead of decoding again. `training_stream` then serves one epoch after another in
the order the minority-class method asks for (`lib.core.minority.MinorityMethod.epoch_rows`),
augmented; `Batches` serves any array (pixels or `lib.training.activation_cache`'s cached
activations) in that order, converting a batch at a time, on any Keras backend (no tf.data),
preparing the next batches in worker threads while the model trains.

The augmentation (`Augmentation`) runs on the host, as the original study's Keras
``ImageDataGenerator`` did: one composed affine transform per image (rotation, shifts,
shear, zoom, flip), applied by OpenCV in one resampling. Keras 3's preprocessing layers,
which did this before, resample once per transform and are far slower (at 224 px on the
project's CPU, 13-15x under TensorFlow, ~80x under JAX; benchmarks/RESULTS.md, "where the
augmentation runs"). Its random draws depend only on the seed, the epoch and
the batch, never on which thread computes a batch or when. Validation and test data never
pass through it, and nothing from those splits ever reaches training.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.core.config import AugmentationParams
from lib.core.devices import batch_rows
from lib.core.distribution import process_share
from lib.data.images import load_rgb
from lib.data.sources import SPLITS


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


def cached_pixels(paths, image_size: tuple[int, int], cache_dir: Path | None, write: bool = True) -> np.ndarray:
    """`decode_images`, read from ``cache_dir`` when these files were decoded at this size before.

    The cache is one ``.npy`` file per (file list, size) key, decoded straight into the file (so
    that the decoded set is never in memory all at once) and put in place atomically; it is
    returned memory-mapped. Older entries in ``cache_dir`` are removed when a new one is
    written. None: no cache. ``write`` False: read the cache when it holds these files, never write
    it (a published run, read by a notebook opened by hand).
    """
    paths = list(paths)
    if cache_dir is None:
        return decode_images(paths, image_size)
    cache_dir = Path(cache_dir)
    file = cache_dir / f"pixels-{image_size[0]}x{image_size[1]}-{pixel_cache_key(paths, image_size)}.npy"
    if file.is_file():
        return np.load(file, mmap_mode="r")
    if not write:
        return decode_images(paths, image_size)
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


def load_study_data(manifest: pd.DataFrame, image_size: tuple[int, int], cache_dir: Path | None = None,
                    write_cache: bool = True) -> StudyData:
    """The manifest's images, decoded once (or read from ``cache_dir``), split by split.

    The cache holds the files in path order, whatever the manifest's order, so that every
    evaluation round (each its own split of the same images) reads the same cache; each split
    reads its rows from it when a batch needs them (`PixelRows`), so the decoded dataset is
    never held in memory. Without ``cache_dir``, the images are decoded into memory; with ``write_cache``
    False, the cache is read when it holds them and never written (`cached_pixels`).
    """
    class_names = sorted(manifest.loc[manifest["split"] == "train", "label"].unique())
    index_of = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(manifest["label"]) - set(class_names))
    if unknown:
        raise ValueError(f"class(es) {unknown} appear in validation/test but not in training")
    paths = manifest["path"].to_numpy(dtype=str)
    in_path_order = np.argsort(paths, kind="stable")
    cache = cached_pixels(paths[in_path_order], image_size, cache_dir, write_cache)
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


MIX_DRAWS = 1  # the extra seed word of `Batches`' mixing draws, so that they differ from the augmentation's


@dataclass(frozen=True, eq=False)
class _Epoch:
    """One epoch of a `Batches` stream: its number (which decides the augmentation's draws), the rows in
    order and the view each is read from. Replaced whole at each epoch, so that a batch prepared in a
    worker thread reads one epoch's state, never a mix of two."""

    number: int
    rows: np.ndarray
    views: np.ndarray


def one_opencv_thread_per_warp(environ=os.environ) -> None:
    """Run each OpenCV warp on the thread that calls it, unless ``OPENCV_FOR_THREADS_NUM`` (OpenCV's own setting,
    read at import) chooses otherwise.

    The batch workers already warp several batches at once; OpenCV's pool would split every warp over
    all CPUs again (workers x CPUs threads, beside TensorFlow's pool where the CPU trains the model).
    A warp's pixels are the same with any number of threads. OpenCV's setting is process-wide.
    """
    if "OPENCV_FOR_THREADS_NUM" not in environ:
        cv2.setNumThreads(1)


@functools.cache
def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """The worker threads of every `Batches` asking for this many (one pool per size, for the process's life)."""
    one_opencv_thread_per_warp()
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batches")


def data_workers(setting: int | str, accelerator: bool) -> int:
    """The number of worker threads ``training.data_workers`` asks for; a number is taken as it is.

    'auto' follows the machine. Where an accelerator trains the model (``accelerator``), one per CPU
    this process may use, at most 8: the training loop waits on the device, and the host keeps up with
    a GPU with fewer (benchmarks/RESULTS.md). Where the CPU trains it, 1: TensorFlow already runs one
    thread per CPU on the training's arithmetic, the augmentation is a few per cent of that work, and
    one thread keeps the next batch ready without taking a core from the arithmetic.
    """
    if setting != "auto":
        return int(setting)
    if not accelerator:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus)


class Batches(keras.utils.PyDataset):
    """Batches of ``(inputs[view, row], one-hot label)`` from inputs shaped ``(views, N, ...)`` (an array, or
    `OneView` of a split's images): the one data path of training, validation and prediction, on every
    Keras backend.

    With a ``seed``, each epoch's rows come from ``method.epoch_rows`` (shuffled, or every class
    drawn equally often), drawn afresh from ``default_rng([seed, epoch])``: a shuffled epoch *e*
    reads view *e* mod views; a balanced draw reads a random view, so that the repeats of a rare
    image are not all the same augmented view. Without a seed: every row once, in order, view 0
    (validation, prediction), as epoch ``epoch`` for the augmentation's draws (`lib.training.activation_cache`
    computes its augmented view *v* as epoch *v*). ``augment``, if given (an `Augmentation`),
    transforms each batch (training, and the augmented views `lib.training.activation_cache` computes).
    A seeded batch is then mixed as the method asks (``method.mix_batch``: mixup blends it with itself
    reordered, targets included; other methods leave it as it is).
    Without ``labels``, batches are inputs only (prediction). A batch is converted to float32 when it
    is served, so that uint8 pixels are never held as float32 all at once.

    ``threads`` > 0: while the model trains on batch *i*, that many worker threads prepare batches
    *i* + 1 ... *i* + ``threads`` of the same epoch (reading, converting, augmenting: NumPy and
    OpenCV release the GIL). A batch is a function of its epoch and index alone, so the batches
    are the same with any number of threads. This is not Keras' ``PyDataset(workers=...)``: its
    enqueuer keeps batches prefetched before ``on_epoch_end`` and serves them in the next epoch,
    and starts prefetching before ``on_epoch_begin`` has drawn the epoch, so that which epoch's
    order a batch follows depends on timing (benchmarks/RESULTS.md).

    ``shard`` (process index, process count): in a run across processes (`lib.core.distribution`), each
    training batch is served as this process's share of the global batch (`process_share`), augmented
    with the global batch's draws for those rows: the processes' shares together are the batch one
    process serves.
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray | None, n_classes: int, batch_size: int,
                 method=None, seed: int | None = None, augment: Augmentation | None = None, threads: int = 0,
                 epoch: int = 0, shard: tuple[int, int] = (0, 1)):
        super().__init__()  # workers=1: no Keras enqueuer (see above); our own threads prefetch
        if seed is not None and method is None:
            raise ValueError("a seeded (training) stream needs the minority-class method that orders its epochs")
        self.inputs, self.labels, self.batch_size = inputs, labels, batch_size
        self.n_classes, self.method, self.seed, self.augment = n_classes, method, seed, augment
        self.threads, self.first_epoch, self.shard = threads, epoch, shard
        self.targets = None if labels is None else np.eye(n_classes, dtype="float32")[labels]
        self._epochs_begun = 0
        self._epoch = self._draw(epoch)
        self._prefetched: dict[int, tuple[_Epoch, object]] = {}  # batch index -> (its epoch, its future)
        self._lock = threading.Lock()

    def _draw(self, number: int) -> _Epoch:
        """Epoch ``number``'s rows, in order, and the view each is read from."""
        views, count = self.inputs.shape[:2]
        if self.seed is None:
            return _Epoch(number, np.arange(count), np.zeros(count, dtype=int))
        rng = np.random.default_rng([self.seed, number])
        rows = self.method.epoch_rows(self.labels, self.n_classes, rng)
        if self.method.balances_sampling:
            return _Epoch(number, rows, rng.integers(0, views, count))
        return _Epoch(number, rows, np.full(count, number % views))

    def _batches(self) -> list[slice]:
        """Each batch's positions in the epoch's order; split over several devices, shaped as
        `lib.core.devices.batch_rows` says (a training epoch then leaves out fewer rows than devices)."""
        return batch_rows(self.inputs.shape[1], self.batch_size, training=self.seed is not None)

    def __len__(self) -> int:
        return len(self._batches())

    def _batch(self, epoch: _Epoch, index: int):
        """Batch ``index`` of ``epoch``: reads nothing that changes between epochs (any thread may run it)."""
        whole = self._batches()[index]
        batch = process_share(whole, *self.shard) if self.seed is not None else whole
        rows = epoch.rows[batch]
        inputs = self.inputs[epoch.views[batch], rows].astype("float32", copy=False)
        if self.augment is not None:
            inputs = self.augment(inputs, epoch.number, index, draws=(batch.start - whole.start, whole.stop - whole.start))
        if self.targets is None:
            return inputs
        if self.seed is None:
            return inputs, self.targets[rows]
        # A training batch as the method trains on it (mixup blends it), its draws a function of epoch and batch
        return self.method.mix_batch(inputs, self.targets[rows], np.random.default_rng([self.seed, epoch.number, index,
                                                                                         MIX_DRAWS]))

    def __getitem__(self, index: int):
        if not self.threads:
            return self._batch(self._epoch, index)
        with self._lock:
            epoch = self._epoch
            ready = self._prefetched.pop(index, None)
            for ahead in range(index + 1, min(index + 1 + self.threads, len(self))):
                if ahead not in self._prefetched:
                    self._prefetched[ahead] = (epoch, _thread_pool(self.threads).submit(self._batch, epoch, ahead))
        if ready is not None and ready[0] is epoch:
            return ready[1].result()
        return self._batch(epoch, index)

    def on_epoch_begin(self) -> None:
        # Keras calls this once at the start of every epoch (on_epoch_end also runs on resets)
        if self.seed is None:
            return  # every epoch is the same rows in the same order
        self._epochs_begun += 1
        epoch = self._draw(self.first_epoch + self._epochs_begun - 1)
        with self._lock:
            self._epoch = epoch
            for _, future in self._prefetched.values():
                future.cancel()  # another epoch's batches
            self._prefetched.clear()


def training_stream(data: SplitData, n_classes: int, batch_size: int, method, seed: int,
                    augmenter: Augmentation | None, threads: int = 0, shard: tuple[int, int] = (0, 1)) -> Batches:
    """The augmented training batches of one split under a minority-class method, epoch after epoch (this process's
    ``shard`` of each)."""
    return Batches(OneView(data.images), data.labels, n_classes, batch_size, method, seed, augmenter, threads,
                   shard=shard)


def evaluation_stream(data: SplitData, n_classes: int, batch_size: int, threads: int = 0) -> Batches:
    """Every image of a split once, in order, not augmented (validation)."""
    return Batches(OneView(data.images), data.labels, n_classes, batch_size, threads=threads)


def image_batches(images: np.ndarray, batch_size: int, augmenter: Augmentation | None = None,
                  view: int = 0, threads: int = 0) -> Batches:
    """Images only, in order, for ``predict`` (augmented by ``augmenter`` if given: its draws for ``view``)."""
    return Batches(OneView(images), None, 1, batch_size, augment=augmenter, threads=threads, epoch=view)


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
