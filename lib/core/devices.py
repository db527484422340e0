"""The devices Keras' backend trains on, and data-parallel training over several of them.

`visible_devices` describes what this process's Keras backend sees (GPU model and count, or
the CPU's cores), for the precision choice (`lib.training.models.auto_precision`) and the record
(`lib.training.experiment.compute_evaluation`, the report's methods table). `data_parallel` is the one
place where several devices come in: around each training (`lib.training.experiment.train_each_method`)
it opens Keras' ``DataParallel`` distribution under JAX, or a ``tf.distribute.MirroredStrategy``
scope under TensorFlow, so that the model is built, compiled and fitted over every device, each
batch of ``training.batch_size`` images split between them (the global batch stays the study's).
Keras' PyTorch backend has no such API: it trains on one device.

Both engines need every training batch to split evenly over the devices; `batch_rows` (used by
`lib.data.inputs.Batches`) shapes the batches for that while a `data_parallel` block is open.
Across processes (`lib.core.distribution`), a model's variables span every process's devices:
`on_this_process` gives each process its own copy to predict with.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import keras

from lib.core.backends import BACKEND_PACKAGES
from lib.core.versions import installed_version


@dataclass(frozen=True)
class Devices:
    """The devices of one kind that Keras' backend computes on: accelerators if it sees any, else the CPU
    (as one device, or as several host devices where the backend was configured so)."""

    backend: str
    backend_version: str
    keras_version: str
    platform: str  # "gpu", "tpu" or "cpu"
    names: tuple[str, ...]  # one per device, e.g. "NVIDIA H100 80GB HBM3"; "CPU" for host devices
    compute_capability: float | None = None  # the lowest of the GPUs' (CUDA), None elsewhere
    cpu_cores: int = 1

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def replicas(self) -> int:
        """Over how many devices `data_parallel` splits each batch (1: no distribution)."""
        return self.count if self.count > 1 and self.backend in ("jax", "tensorflow") else 1

    def describe(self) -> str:
        """E.g. "2 × NVIDIA H100 80GB HBM3", "CPU, 16 cores", "CPU, 2 cores as 2 host devices"."""
        if self.platform == "cpu":
            cores = f"CPU, {self.cpu_cores} cores"
            return cores if self.count == 1 else f"{cores} as {self.count} host devices"
        return ", ".join(f"{n} × {name}" for name, n in Counter(self.names).items())

    def to_dict(self) -> dict:
        """What `lib.training.experiment.compute_evaluation` records in metrics.json under ``runtime``."""
        return asdict(self) | {"count": self.count, "replicas": self.replicas, "description": self.describe()}


def _capability(value) -> float | None:
    """A CUDA compute capability as a number (8.6), from "8.6" or (8, 6); None when there is none."""
    if value is None or value == "":
        return None
    if isinstance(value, (tuple, list)):
        return float(f"{value[0]}.{value[1]}")
    return float(value)


def _tensorflow_devices() -> tuple[str, list[str], list]:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return "cpu", ["CPU"] * len(tf.config.list_logical_devices("CPU")), []
    details = [tf.config.experimental.get_device_details(g) for g in tf.config.list_physical_devices("GPU")]
    details = [details[min(i, len(details) - 1)] for i in range(len(gpus))] if details else [{}] * len(gpus)
    return ("gpu", [d.get("device_name", "GPU") for d in details],
            [d.get("compute_capability") for d in details])


def _jax_devices() -> tuple[str, list[str], list]:
    import jax

    found = jax.devices()
    platform = "gpu" if found[0].platform in ("gpu", "cuda", "rocm") else found[0].platform
    if platform == "cpu":
        return "cpu", ["CPU"] * len(found), []
    return platform, [d.device_kind for d in found], [getattr(d, "compute_capability", None) for d in found]


def _torch_devices() -> tuple[str, list[str], list]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", ["CPU"], []
    count = torch.cuda.device_count()
    return ("gpu", [torch.cuda.get_device_name(i) for i in range(count)],
            [torch.cuda.get_device_capability(i) for i in range(count)])


def visible_devices() -> Devices:
    """The devices this process's Keras backend computes on, with the backend and its version."""
    backend = keras.backend.backend()
    finders = {"tensorflow": _tensorflow_devices, "jax": _jax_devices, "torch": _torch_devices}
    if backend not in finders:
        raise NotImplementedError(f"no device description for Keras backend {backend!r}")
    platform, names, capabilities = finders[backend]()
    known = [c for c in map(_capability, capabilities) if c is not None]
    return Devices(
        backend=backend,
        backend_version=installed_version(BACKEND_PACKAGES[backend][0]),
        keras_version=keras.version(),
        platform=platform,
        names=tuple(names) or ("CPU",),
        compute_capability=min(known) if known else None,
        cpu_cores=os.cpu_count() or 1,
    )


class EvenSplitDataParallel(keras.distribution.DataParallel):
    """Keras' ``DataParallel`` (JAX), which splits every batch's rows over the devices, except a batch that
    does not split evenly: that one goes whole to every device (the same arithmetic, replicated).

    Keras fixes an iterator's layout from its first batch, so a stream whose short batch comes first
    (evaluation, see `batch_rows`) is computed replicated throughout, exactly; training batches always
    split evenly (`batch_rows`).
    """

    def get_data_layout(self, data_shape):
        if data_shape[0] % self.device_mesh.devices.size:
            return keras.distribution.TensorLayout([None] * len(data_shape), self.device_mesh)
        return super().get_data_layout(data_shape)


_replicas = 1  # of the open `data_parallel` block; read by `batch_rows` from any thread (a loader's included)


def active_replicas() -> int:
    """Over how many devices the open `data_parallel` block splits each batch (1 outside one)."""
    return _replicas


@contextlib.contextmanager
def data_parallel(devices: Devices, batch_size: int) -> Iterator[int]:
    """Build, compile and fit the models created in this block over all of ``devices``; yields the replica count.

    One device (or PyTorch): nothing changes. Several: JAX trains under `EvenSplitDataParallel`,
    TensorFlow under ``MirroredStrategy``; each batch of ``batch_size`` images (the global batch)
    is split evenly between the devices, which therefore must divide it.
    """
    global _replicas
    replicas = devices.replicas
    if replicas == 1:
        yield 1
        return
    if batch_size % replicas:
        raise ValueError(
            f"training.batch_size {batch_size} does not split evenly over the {replicas} devices "
            f"({devices.describe()}): choose a multiple of {replicas}, e.g. {batch_size - batch_size % replicas or replicas}"
        )
    if devices.backend == "jax":
        # Across processes each one's `lib.data.inputs.Batches` already serves its share (Keras' auto-sharding
        # is tf.data's)
        scope = EvenSplitDataParallel(devices=keras.distribution.list_devices(), auto_shard_dataset=False).scope()
    else:
        import tensorflow as tf

        kind = "GPU" if devices.platform == "gpu" else "CPU"
        # CPUs have no NCCL; there TensorFlow 2.21's default collective all-reduce failed in MobileNetV2's
        # head phase (a shape mismatch between the devices' collectives), reducing through one device works.
        reduction = None if kind == "GPU" else tf.distribute.ReductionToOneDevice()
        scope = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices(kind)],
                                               cross_device_ops=reduction).scope()
    _replicas = replicas
    try:
        with scope:
            yield replicas
    finally:
        _replicas = 1


def batch_rows(count: int, batch_size: int, training: bool, replicas: int | None = None) -> list[slice]:
    """The row slices of a stream's batches (``count`` rows in batches of ``batch_size``).

    On one device: in order, the last batch short. Split over several (``replicas``, default the
    open `data_parallel` block's): a training epoch leaves out its last ``count mod replicas``
    rows (fewer than the devices; each epoch draws its order afresh, so not the same images),
    since every training batch must split evenly; an evaluation pass keeps every row, its short
    batch first (see `EvenSplitDataParallel`).
    """
    replicas = active_replicas() if replicas is None else replicas
    if replicas > 1 and training:
        count -= count % replicas
    starts = list(range(0, count, batch_size))
    if replicas > 1 and not training and count % batch_size:
        starts = [0, *range(count % batch_size, count, batch_size)]
    return [slice(start, end) for start, end in zip(starts, [*starts[1:], count])]


def across_processes() -> bool:
    """Whether this process trains together with others (`lib.core.distribution`; JAX only)."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.process_count() > 1


@contextlib.contextmanager
def on_this_process(model: keras.Model) -> Iterator[keras.Model]:
    """``model`` where this process alone can compute with it: itself, except across processes, where its
    variables span every process's devices and Keras' ``predict`` cannot gather outputs that live on another
    host's devices. There the block runs outside the distribution, on a copy with the same weights on this
    process's devices (every process holds the same replicated weights, so every copy is the same)."""
    if not across_processes():
        yield model
        return
    distribution = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        local = keras.models.clone_model(model)
        local.set_weights(model.get_weights())
        yield local
    finally:
        keras.distribution.set_distribution(distribution)


def missing_gpu_warning(devices: Devices, listed: tuple[str, ...]) -> str | None:
    """In words, when the machine has GPUs (``listed``: `lib.core.backends.visible_gpus`) and Keras' backend
    computes on the CPU all the same; else None."""
    if devices.platform != "cpu" or not listed:
        return None
    return (f"this machine has {len(listed)} GPU(s) but Keras' {devices.backend} backend sees none: the study trains "
            "on the CPU, many times slower. Install the GPU build (tools/setup_env.sh --gpu; "
            "docs/backends-and-devices.md) or hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU knowingly")
