"""Training across processes and hosts: the standard coordinates, Keras' ``keras.distribution.initialize``, each
process's share of a global batch.

Every process of a multi-process run is started with the same coordinates, as ``torchrun`` and
``jax.distributed`` users know them: the coordinator's ``HOST:PORT`` (process 0 serves it), the
number of processes, and this process's index, given as arguments or in the environment variables
Keras reads (``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES``,
``KERAS_DISTRIBUTION_PROCESS_ID``). `initialize` joins the run as ``keras.distribution.initialize``
does, before anything computes; under JAX, `lib.core.devices.data_parallel`'s ``DataParallel`` then spans
every process's devices, and each process feeds only its share of each global batch (`process_share`,
used by `lib.data.inputs.Batches`): the global batch, its order and its augmentation draws are those
of one process. TensorFlow's multi-worker training (``TF_CONFIG``, ``MultiWorkerMirroredStrategy``) and
PyTorch are not wired in: `initialize` says so.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

ENVIRONMENT = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")


class DistributionError(RuntimeError):
    """Coordinates that do not fit together, a coordinator that cannot be reached, a backend that cannot train
    across processes."""


@dataclass(frozen=True)
class Coordinates:
    """Where this process stands in a multi-process run: the coordinator (``HOST:PORT``, served by process 0),
    how many processes, and this one's index (0 .. ``processes`` - 1)."""

    coordinator: str
    processes: int
    index: int

    def __post_init__(self):
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise DistributionError(f"the coordinator must be HOST:PORT (e.g. node0:12355), got {self.coordinator!r}")
        if self.processes < 1:
            raise DistributionError(f"the number of processes must be 1 or more, got {self.processes}")
        if not 0 <= self.index < self.processes:
            raise DistributionError(f"the process index must be 0 .. {self.processes - 1} for {self.processes} "
                                    f"processes, got {self.index}")

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.coordinator.rpartition(":")
        return host, int(port)

    def environment(self) -> dict[str, str]:
        """The variables Keras reads, for a process started with these coordinates (a notebook kernel)."""
        return dict(zip(ENVIRONMENT, (self.coordinator, str(self.processes), str(self.index))))


def coordinates(coordinator: str | None = None, processes: int | None = None, index: int | None = None,
                environ: Mapping[str, str] | None = None) -> Coordinates | None:
    """The coordinates given (arguments first, then Keras' environment variables), or None for one process.

    Either all three are known or none: a partial set is an error naming what is missing.
    """
    environ = os.environ if environ is None else environ
    job_addresses = coordinator or environ.get(ENVIRONMENT[0], "").strip() or None
    if job_addresses and "," in job_addresses:  # Keras' form: every job's address, the coordinator's first
        job_addresses = job_addresses.split(",")[0]
    given = {"--coordinator / KERAS_DISTRIBUTION_JOB_ADDRESSES": job_addresses,
             "--num-processes / KERAS_DISTRIBUTION_NUM_PROCESSES": processes if processes is not None
             else environ.get(ENVIRONMENT[1]),
             "--process-id / KERAS_DISTRIBUTION_PROCESS_ID": index if index is not None else environ.get(ENVIRONMENT[2])}
    missing = [name for name, value in given.items() if value in (None, "")]
    if len(missing) == 3:
        return None
    if missing:
        raise DistributionError(f"a multi-process run needs all three coordinates; missing: {', '.join(missing)}")
    _, count, rank = given.values()
    try:
        return Coordinates(job_addresses, int(count), int(rank))
    except ValueError:
        raise DistributionError(f"the number of processes and the process index must be integers, got {count!r} "
                                f"and {rank!r}") from None


def check_reachable(where: Coordinates, timeout: float = 300.0) -> None:
    """Wait, up to ``timeout`` seconds, until a process other than 0 can open a connection to the coordinator (process
    0 may start later); then fail with a message naming it. JAX itself would abort the process instead."""
    if where.index == 0:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(where.address, timeout=10):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise DistributionError(
                    f"process {where.index} of {where.processes} cannot reach the coordinator {where.coordinator} "
                    f"within {timeout:g} s ({error.strerror or error}): is process 0 running there, and the port "
                    "open?") from None
            time.sleep(0.5)


_joined: Coordinates | None = None  # the run this process joined (`initialize`)


def check_backend(backend: str, where: Coordinates) -> None:
    """Stop, with what to do, when Keras' ``backend`` cannot train across the processes of ``where``."""
    if backend != "jax":
        raise DistributionError(
            f"training across {where.processes} processes runs on JAX here; Keras runs {backend!r} (set "
            "training.backend: jax). TensorFlow's MultiWorkerMirroredStrategy (TF_CONFIG) and PyTorch are not wired "
            "into the study")


def initialize(where: Coordinates, timeout_seconds: int = 300, heartbeat_seconds: int = 100) -> None:
    """Join the multi-process run before anything computes: what ``keras.distribution.initialize`` does under JAX
    (``jax.distributed.initialize``), called here directly because Keras' call takes no timeouts; on CPUs, JAX's
    collectives go through gloo. Process 0 waits up to ``timeout_seconds`` for every other process to join; a
    process silent for ``heartbeat_seconds`` later ends the others (JAX's coordination service)."""
    import keras

    global _joined
    if _joined is not None:  # a notebook's second `lib.training.experiment.prepare`: this process has joined
        if _joined != where:
            raise DistributionError(f"this process joined {_joined}, not {where}")
        return
    check_backend(keras.backend.backend(), where)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPUs: the collectives between processes
    check_reachable(where, timeout_seconds)
    try:
        jax.distributed.initialize(coordinator_address=where.coordinator, num_processes=where.processes,
                                   process_id=where.index, initialization_timeout=timeout_seconds,
                                   heartbeat_timeout_seconds=heartbeat_seconds)
    except Exception as error:  # JAX raises XlaRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE) here
        raise DistributionError(
            f"process {where.index} of {where.processes} could not join the run coordinated by {where.coordinator} "
            f"within {timeout_seconds} s: {str(error).splitlines()[0]} (did every process start, with the same "
            "coordinates? In a study, every process must run this step: one that reused it from its own earlier run "
            "never comes; --force on every process reruns them all)") from None
    _joined = where


def join_from_environment(timeout_seconds: int = 300) -> Coordinates | None:
    """In a notebook kernel of a run across processes (the runner sets ``KERAS_DISTRIBUTION_*``): join the run
    (once per process) and return its coordinates; None where one process computes alone."""
    where = coordinates()
    if where is None or where.processes == 1:
        return None
    initialize(where, timeout_seconds)
    return where


def process_share(batch: slice, index: int, processes: int) -> slice:
    """The rows of a global ``batch`` process ``index`` of ``processes`` feeds: its contiguous equal part (the
    global batch splits evenly over the devices, `lib.core.devices.batch_rows`, hence over the processes)."""
    size = batch.stop - batch.start
    if size % processes:
        raise ValueError(f"a batch of {size} rows does not split evenly over {processes} processes")
    share = size // processes
    return slice(batch.start + index * share, batch.start + (index + 1) * share)
