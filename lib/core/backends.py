"""Which Keras 3 backend runs the study (TensorFlow, JAX or PyTorch), and how it is made deterministic.

Keras picks its backend once, when it is first imported, from ``KERAS_BACKEND``; the runner
(`lib.run`) therefore decides before any kernel starts: `resolve_backend` turns
``training.backend`` into a backend name, and `kernel_environment` gives every notebook
kernel ``KERAS_BACKEND`` and that backend's determinism switches. Nothing here imports Keras,
so the runner stays light; inside a kernel, `check_active_backend` stops a notebook whose
Keras runs another backend than the params ask for, and `make_deterministic` turns the active
backend's deterministic operations on.

``auto`` prefers JAX where JAX sees an accelerator (GPU or TPU): there it is the fastest of
the three for these models; elsewhere TensorFlow, whose oneDNN kernels are the tuned CPU path
(and its bfloat16 path, see `lib.training.models.auto_precision`); then JAX, then PyTorch, whichever
is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping

from lib.core.hardware import nvidia_gpus
from lib.core.versions import installed_version

BACKENDS = ("tensorflow", "jax", "torch")
BACKEND_TITLES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
# The distributions whose versions identify a backend (its results may change with any of them).
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}
# XLA's switch for deterministic GPU reductions (scatter, reductions, convolutions' algorithms);
# it is read when JAX starts its GPU client, so it must be in the kernel's environment.
JAX_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


class BackendError(ValueError):
    """A backend that cannot be used: not installed, unknown, or contradicting ``KERAS_BACKEND``."""


def is_installed(backend: str) -> bool:
    """Whether the backend's package can be imported here (without importing it)."""
    return importlib.util.find_spec(backend) is not None


def jax_accelerator(timeout: float = 120.0) -> str | None:
    """The accelerator platform JAX sees on this machine ('gpu', 'tpu'), or None (CPU only, or no JAX).

    Asked in a fresh interpreter, so that this process imports neither JAX nor Keras and holds
    no accelerator memory (preallocation is switched off for the question).
    """
    if not is_installed("jax"):
        return None
    ask = "import jax; print(jax.default_backend())"
    environment = os.environ | {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        answer = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, timeout=timeout,
                                env=environment, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    platform = answer[-1] if answer else "cpu"
    return None if platform == "cpu" else platform


def resolve_backend(requested: str = "auto", environ: Mapping[str, str] | None = None,
                    accelerator=jax_accelerator) -> str:
    """The backend a run uses, from ``training.backend`` (``requested``) and ``KERAS_BACKEND``.

    ``KERAS_BACKEND``, when set, is honoured; a ``requested`` backend other than ``auto`` that
    contradicts it is an error naming both. ``auto`` is JAX where JAX sees an accelerator
    (``accelerator()``), else TensorFlow, JAX or PyTorch, the first one installed.
    """
    environ = os.environ if environ is None else environ
    if requested != "auto" and requested not in BACKENDS:
        raise BackendError(f"training.backend must be auto or one of {', '.join(BACKENDS)}, got {requested!r}")
    chosen = environ.get("KERAS_BACKEND", "").strip()
    if chosen:
        if chosen not in BACKENDS:
            raise BackendError(f"KERAS_BACKEND={chosen} is not a backend the study trains with "
                               f"({', '.join(BACKENDS)}): unset it or name one of these")
        if requested not in ("auto", chosen):
            raise BackendError(f"training.backend is {requested!r} but KERAS_BACKEND={chosen}: unset "
                               f"KERAS_BACKEND, set it to {requested}, or set training.backend to auto or {chosen}")
    else:
        chosen = requested
    if chosen != "auto":
        if not is_installed(chosen):
            raise BackendError(f"the Keras backend {chosen!r} is not installed in this environment "
                               f"({sys.executable}); install {chosen} or choose another training.backend")
        return chosen
    if is_installed("jax") and accelerator():
        return "jax"
    for backend in BACKENDS:
        if is_installed(backend):
            return backend
    raise BackendError(f"none of the Keras backends ({', '.join(BACKENDS)}) is installed: "
                       "run tools/setup_env.sh, which installs TensorFlow and JAX")


def visible_gpus() -> tuple[str, ...]:
    """The machine's GPUs a process may use (those the runner hands out, `lib.pipeline.schedule`): those
    ``CUDA_VISIBLE_DEVICES`` names when it is set, else those ``nvidia-smi`` lists (none on a machine without it).
    Asked without importing a backend."""
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return tuple(g.strip() for g in named.split(",") if g.strip() not in ("", "-1"))
    return tuple(gpu["index"] for gpu in nvidia_gpus())


def backend_identity(backend: str) -> dict[str, str]:
    """The backend's name and the versions of its packages: part of each step's key (`lib.pipeline.keys.step_key`)."""
    return {"backend": backend} | {package: installed_version(package) for package in BACKEND_PACKAGES[backend]}


def kernel_environment(backend: str, deterministic: bool, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables a notebook kernel needs to run ``backend`` (deterministically, if asked).

    ``KERAS_BACKEND`` always; with ``deterministic``, the switches that must be in place before
    the backend starts: XLA's deterministic GPU operations for JAX, cuBLAS's fixed workspace
    for PyTorch's deterministic algorithms on CUDA, TensorFlow's op determinism. `make_deterministic`
    sets the rest from inside the kernel.
    """
    environ = os.environ if environ is None else environ
    variables = {"KERAS_BACKEND": backend}
    if deterministic:
        if backend == "jax":
            flags = environ.get("XLA_FLAGS", "")
            if JAX_DETERMINISTIC_FLAG not in flags.split():
                variables["XLA_FLAGS"] = f"{flags} {JAX_DETERMINISTIC_FLAG}".strip()
        elif backend == "torch":
            variables["CUBLAS_WORKSPACE_CONFIG"] = environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif backend == "tensorflow":
            variables["TF_DETERMINISTIC_OPS"] = "1"
    return variables


@contextlib.contextmanager
def environment_variables(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in this process's environment (which a kernel started inside inherits), then
    restore what was there."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def active_backend() -> str:
    """The backend of this process's Keras (which imports Keras)."""
    import keras

    return keras.backend.backend()


def check_active_backend(requested: str, source: str = "training.backend") -> str:
    """Stop when this process's Keras runs another backend than ``requested`` (``auto`` takes any); return it.

    Keras chose its backend when it was first imported, so the only remedy is a new process.
    """
    active = active_backend()
    if requested not in ("auto", active):
        raise BackendError(
            f"{source} is {requested!r} but Keras runs on {active!r} in this process "
            f"(KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '(not set)')}). Keras picks its backend when it is "
            f"first imported: restart the kernel with KERAS_BACKEND={requested} (e.g. `KERAS_BACKEND={requested} "
            f"jupyter lab`), or set {source} to auto or {active}"
        )
    return active


def make_deterministic(backend: str | None = None) -> None:
    """Turn on the deterministic operations of ``backend`` (default: this process's Keras backend).

    TensorFlow: op determinism. PyTorch: deterministic algorithms (cuDNN autotuning off). JAX is
    deterministic on CPUs; on GPUs it needs ``XLA_FLAGS`` before it starts (`kernel_environment`
    gives the runner's kernels that; here it is added for a JAX that has not started yet).
    """
    backend = backend or active_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif backend == "jax" and "XLA_FLAGS" in (switches := kernel_environment("jax", True)):
        os.environ["XLA_FLAGS"] = switches["XLA_FLAGS"]
