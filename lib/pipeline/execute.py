"""One step executed: its notebook run by papermill in its own kernel, its memory peak sampled."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from lib.core.backends import environment_variables, kernel_environment, resolve_backend
from lib.core.config import load_params
from lib.core.paths import NOTEBOOKS_DIR, RunPaths
from lib.pipeline.steps import PlannedStep

IOPUB_TIMEOUT_SECONDS = 120
RUNNER_PID_VARIABLE = "STUDY_RUNNER_PID"  # the process that started a step's kernel: the kernel ends with it
KERNEL_KEEPS_LOW_LEVEL_OUTPUT_OUT = "--IPKernelApp.capture_fd_output=False"
# What a failure in a kernel that trains with other processes most likely means, whatever JAX or gloo called it
ACROSS_PROCESSES_HINT = ("This step trains across processes: another process of the run may have stopped (JAX ends "
                         "the run's other kernels, and their collectives fail, when one of them dies)")


class StepFailed(RuntimeError):
    """A notebook failed; the message names it and its failing cell."""


class StepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a notebook; the message names it."""


class ChildrenMemoryPeak:
    """The largest resident memory of this process's children together (a step's notebook
    kernel and anything it starts) while the ``with`` block runs, sampled every ``interval`` s.
    Children that were already running when the block began (a worker pool, say) are not the
    block's, and are left out.

    What a step asks of the machine's memory; ``steps.json`` records it per step as
    ``peak_rss_gib``. Sampling can miss a spike shorter than ``interval``.
    """

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak_bytes = interval, 0
        self._earlier: set[int] = set()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _resident_bytes(self) -> int:
        total = 0
        for child in psutil.Process().children(recursive=True):
            if child.pid in self._earlier:
                continue
            try:
                total += child.memory_info().rss
            except psutil.Error:  # it ended between the listing and the reading
                pass
        return total

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self._resident_bytes())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> ChildrenMemoryPeak:
        self._earlier = {child.pid for child in psutil.Process().children(recursive=True)}
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()

    @property
    def gib(self) -> float:
        return round(self.peak_bytes / 2**30, 2)


def executed_entry(run: Callable[[], object], key: str) -> dict:
    """Run one step (``run()``), timing it and sampling its kernel's memory: its ``steps.json`` entry."""
    start = time.perf_counter()
    with ChildrenMemoryPeak() as memory:
        run()
    return {"key": key, "seconds": round(time.perf_counter() - start, 1), "reused": False, "peak_rss_gib": memory.gib}


def execute_step(planned: PlannedStep, params_file: Path, run: RunPaths, key: str | None = None,
                 backend: str | None = None, overrides: dict | None = None,
                 environment: dict[str, str] | None = None) -> Path:
    """Execute one notebook with papermill into the run (or round) folder's notebooks/; return the executed copy.

    A per-round step also gets its input ``key``, under which it keeps each finished training.
    ``overrides``: params changed by dotted name (``{"mobilenet_v2.dropout": 0.4}``), which the notebook
    lays over the params file as the runner did. Its kernel is this Python's own ("python3": the
    project's environment, whatever kernels a user registered) and runs Keras on ``backend`` (None:
    resolved from the params), deterministically when ``training.deterministic``
    (`lib.core.backends.kernel_environment`). ``environment``: more variables for the kernel (in a run across
    processes, its coordinates: `lib.core.distribution.Coordinates.environment`).
    """
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    params = load_params(params_file, overrides)
    backend = backend or resolve_backend(params.training.backend)
    kernel_variables = kernel_environment(backend, params.training.deterministic) | dict(environment or {})
    kernel_variables[RUNNER_PID_VARIABLE] = str(os.getpid())  # the kernel ends with this process (`open_notebook`)
    across = "KERAS_DISTRIBUTION_PROCESS_ID" in kernel_variables  # this kernel trains with other processes
    step = planned.step
    executed = planned.executed_copy(run)
    executed.parent.mkdir(parents=True, exist_ok=True)
    parameters = {"params_file": str(params_file), "run_dir": str(run.root), "overrides": dict(overrides or {})}
    if planned.round is not None:
        parameters |= {"round_name": planned.round.name, "step_key": key}
    try:
        with environment_variables(kernel_variables):  # the kernel inherits them
            papermill.execute_notebook(
                NOTEBOOKS_DIR / step.notebook,
                executed,
                parameters=parameters,
                kernel_name="python3",
                cwd=str(NOTEBOOKS_DIR),
                progress_bar=False,  # the runner shows the step's own progress (`lib.pipeline.progress`)
                # the frameworks' C++ logs go to the runner's stderr (which filters them), not into the notebook
                extra_arguments=[KERNEL_KEEPS_LOW_LEVEL_OUTPUT_OUT],
                # papermill fails a cell whose output the kernel has not sent 4 s after it finished; on a loaded
                # machine (a nice'd benchmark beside other work) that wait is longer, and the results are fine.
                iopub_timeout=IOPUB_TIMEOUT_SECONDS,
            )
    except DeadKernelError as error:  # killed from outside, out of memory, or ended by JAX's coordination service
        why = (ACROSS_PROCESSES_HINT if across
               else "Out of memory? The step's peak is in steps.json of the last good run")
        raise StepFailed(f"{planned.label}: its kernel died ({error}). {why}. The executed copy so far is "
                         f"{executed}") from None
    except PapermillExecutionError as error:
        raise StepFailed(
            f"{planned.label} failed in cell {error.cell_index} (execution count {error.exec_count}): "
            f"{error.ename}: {error.evalue}\n" + (f"{ACROSS_PROCESSES_HINT}.\n" if across else "") +
            f"The executed copy, with the full traceback, is {executed}"
        ) from None
    return executed
