"""The models' input streams: a split's arrays served as batches, training batches augmented.

`training_stream` serves one epoch after another in the order the minority-class method asks for
(`lib.core.minority.MinorityMethod.epoch_rows`), augmented (`lib.data.augmentation`); `Batches` serves any
array (decoded pixels, `lib.data.pixels`, or `lib.training.activation_cache`'s cached activations) in that
order, converting a batch at a time, on any Keras backend, preparing the next batches in
worker threads while the model trains. Validation and test data are never augmented, and nothing from
those splits ever reaches training. `keras_input` hands a stream to ``fit`` (under TensorFlow through
tf.data without its autotuning, which made epochs wait).
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import keras
import numpy as np

from lib.core.devices import batch_rows
from lib.core.distribution import process_share
from lib.data.augmentation import Augmentation, one_opencv_thread_per_warp
from lib.data.pixels import SplitData


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
        mixes = self.seed is not None and bool(self.method.mix_alpha)
        # This process's share of a training batch; a batch that mixup blends is made whole first (a row's partner
        # may be in another process's share), and shared out once blended
        batch = process_share(whole, *self.shard) if self.seed is not None and not mixes else whole
        rows = epoch.rows[batch]
        inputs = self.inputs[epoch.views[batch], rows].astype("float32", copy=False)
        if self.augment is not None:
            inputs = self.augment(inputs, epoch.number, index, draws=(batch.start - whole.start, whole.stop - whole.start))
        if self.targets is None:
            return inputs
        if self.seed is None:
            return inputs, self.targets[rows]
        # A training batch as the method trains on it (mixup blends it), its draws a function of epoch and batch
        inputs, targets = self.method.mix_batch(inputs, self.targets[rows],
                                                np.random.default_rng([self.seed, epoch.number, index, MIX_DRAWS]))
        share = process_share(slice(0, len(inputs)), *self.shard) if mixes else slice(None)
        return inputs[share], targets[share]

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


def keras_input(stream):
    """``stream`` as ``keras.Model.fit`` should take it: under TensorFlow, a `Batches` as a tf.data pipeline without
    tf.data's autotuning; on other backends, and anything but a `Batches`, ``stream`` itself.

    Why: Keras serves a ``PyDataset`` under TensorFlow through ``tf.data`` with ``prefetch(AUTOTUNE)``, and every
    epoch (training and validation) replaces the previous epoch's iterator. Destroying an iterator waits for a
    ``tf.data`` thread that sleeps between its autotuning rounds, for seconds at a time with no CPU in use: on
    two cores the default CNN's epochs took either about 11 s or about 20 s at random (`benchmarks/cnn_epochs.py`,
    benchmarks/RESULTS.md, 2026-12-04). The same batches, in the same order (the epoch is drawn when the
    iterator first asks for a batch, as Keras' ``on_epoch_begin`` draws it), one batch buffered: our own worker
    threads already prepare the next ones.
    """
    if not isinstance(stream, Batches) or keras.backend.backend() != "tensorflow":
        return stream
    import tensorflow as tf

    def one_epoch():
        stream.on_epoch_begin()
        for index in range(len(stream)):
            yield stream[index]

    signature = tf.nest.map_structure(lambda part: tf.TensorSpec((None, *part.shape[1:]), part.dtype), stream[0])
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_generator(one_epoch, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(stream))).prefetch(1).with_options(options)


def image_batches(images: np.ndarray, batch_size: int, augmenter: Augmentation | None = None,
                  view: int = 0, threads: int = 0) -> Batches:
    """Images only, in order, for ``predict`` (augmented by ``augmenter`` if given: its draws for ``view``)."""
    return Batches(OneView(images), None, 1, batch_size, augment=augmenter, threads=threads, epoch=view)
