"""The plan's steps run in order, or side by side (``--jobs N``): which are ready, each job's share of the machine.

A step is ready once the steps whose artefacts it reads have finished (`prerequisites`). With
``jobs`` above 1, up to that many ready steps run at once, each in a process of its own
(``python -m lib.pipeline.job``, started fresh, never forked from the runner) that starts the step's kernel, on a `Slot` of its own: a set of the machine's
GPUs (``CUDA_VISIBLE_DEVICES``) where it has GPUs, and a share of the CPU cores (the process's
CPU affinity, which the kernel inherits). With one job, each step runs in the runner's process, in
the plan's order. A step's results do not depend on which slot it ran on or what ran beside it
(each kernel seeds its own training); ``steps.json`` records, per step, when it started and ended
(seconds after the first step began) and where it ran.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib.core import store
from lib.core.backends import visible_gpus
from lib.core.paths import RunPaths
from lib.pipeline.execute import StepFailed, StepInterrupted
from lib.pipeline.job import execute_request
from lib.pipeline.steps import PlannedStep

# ``begin(planned, number)`` -> (its key, its steps.json entry when it is reused, else None)
Begin = Callable[[PlannedStep, int], tuple[str, dict | None]]
Request = Callable[[PlannedStep, str], dict]  # what the step's job runs under that key (`lib.pipeline.job`)
Finish = Callable[[PlannedStep, dict], None]  # records its steps.json entry
Watching = Callable[[PlannedStep], contextlib.AbstractContextManager]  # held while the step runs
JOB_MODULE = "lib.pipeline.job"  # what a job runs: python -m JOB_MODULE REQUEST RESULT


def _overlap(path: Path, other: Path) -> bool:
    """Whether two artefacts are one: the same file, or a file in a folder that the other names."""
    return path == other or path.is_relative_to(other) or other.is_relative_to(path)


def prerequisites(plan: list[PlannedStep], run: RunPaths) -> dict[str, set[str]]:
    """The labels of the earlier steps each step waits for: those that write an artefact it reads
    (`lib.pipeline.steps.Step.writes`, ``reads``). A model step waits for the audit (which writes every
    round's split) and, after the first round, for its model's first round (whose chosen method it reads);
    the comparison for them all. A step that always runs (the report, which describes the whole run and its
    timings) waits for every earlier step.
    """
    writes = {planned.label: planned.writes(run) for planned in plan}
    waits: dict[str, set[str]] = {}
    for index, planned in enumerate(plan):
        earlier = plan[:index]
        if planned.step.always:
            waits[planned.label] = {p.label for p in earlier}
            continue
        reads = planned.reads(run)
        waits[planned.label] = {p.label for p in earlier
                                if any(_overlap(read, written) for read in reads for written in writes[p.label])}
    return waits


def _ranges(numbers: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> "0-2,5"."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


@dataclass(frozen=True)
class Slot:
    """One job's share of the machine: CPU cores (its process's affinity, inherited by the step's kernel) and
    GPUs (their ``CUDA_VISIBLE_DEVICES`` numbers; none on a machine without), each GPU shared by
    ``gpu_sharers`` jobs (more jobs than GPUs)."""

    cores: tuple[int, ...]
    gpus: tuple[str, ...] = ()
    gpu_sharers: int = 1
    machine_cores: int = 0  # all the jobs' cores together (0: this slot's)

    def environment(self) -> dict[str, str]:
        """The variables the step's kernel starts with: TensorFlow's thread count of the whole machine (its reductions
        split by thread count: with fewer threads the last digits of the predictions differ from one job's), its
        GPUs and, on a shared GPU, its share of the memory (JAX preallocates 75 % of a GPU, TensorFlow all of it)."""
        variables = {"TF_NUM_INTRAOP_THREADS": str(self.machine_cores or len(self.cores))}
        if not self.gpus:
            return variables
        variables |= {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}
        if self.gpu_sharers > 1:
            variables |= {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / self.gpu_sharers:.2f}",
                          "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
        return variables

    def describe(self) -> str:
        """E.g. "GPU 0,1, cores 0-7", "core 1"."""
        cores = f"core{'s' if len(self.cores) > 1 else ''} {_ranges(self.cores)}"
        if not self.gpus:
            return cores
        shared = f" (shared by {self.gpu_sharers} jobs)" if self.gpu_sharers > 1 else ""
        return f"GPU {','.join(self.gpus)}{shared}, {cores}"


def _shares(items: tuple, jobs: int) -> list[tuple]:
    """``items`` in ``jobs`` contiguous near-equal groups; fewer items than jobs: one item each, round robin."""
    if len(items) >= jobs:
        return [items[j * len(items) // jobs:(j + 1) * len(items) // jobs] for j in range(jobs)]
    return [(items[j % len(items)],) for j in range(jobs)]


def job_slots(jobs: int, cores: tuple[int, ...] | None = None, gpus: tuple[str, ...] | None = None) -> list[Slot]:
    """``jobs`` shares of the machine: the GPUs (default `visible_gpus`) split into ``jobs`` sets, shared where
    there are fewer GPUs than jobs, and the cores this process may use (default: its CPU affinity) likewise."""
    if jobs < 1:
        raise ValueError(f"--jobs must be 1 or more, got {jobs}")
    cores = tuple(sorted(os.sched_getaffinity(0))) if cores is None else tuple(cores)
    gpus = visible_gpus() if gpus is None else tuple(gpus)
    core_shares = _shares(cores, jobs)
    if not gpus:
        return [Slot(share, machine_cores=len(cores)) for share in core_shares]
    sharers = -(-jobs // len(gpus))  # ceil: how many jobs each GPU carries
    return [Slot(share, gpu_share, sharers if len(gpus) < jobs else 1, len(cores))
            for share, gpu_share in zip(core_shares, _shares(gpus, jobs))]


class _Job:
    """A step running as a job of its own (``python -m lib.pipeline.job``) on a slot, watched while it runs."""

    def __init__(self, planned: PlannedStep, key: str, slot: Slot, request: dict, folder: Path, watching: Watching):
        self.planned, self.key, self.slot, self.start = planned, key, slot, time.perf_counter()
        self.watch = contextlib.ExitStack()
        self.watch.enter_context(watching(planned))
        name = planned.label.replace("/", "--")
        request_file, self.result_file = folder / f"{name}.request.json", folder / f"{name}.result.json"
        self.result_file.unlink(missing_ok=True)
        store.write_json(request_file, request | {"parent": os.getpid(), "cores": list(slot.cores)})
        self.process = subprocess.Popen([sys.executable, "-m", JOB_MODULE, str(request_file),
                                         str(self.result_file)], env=os.environ | slot.environment())

    def outcome(self) -> tuple[str, object]:
        """("done", its steps.json entry) or ("failed", why), once the job has ended."""
        result = store.read_json(self.result_file, "the job's result was torn", default=None)
        if result is None:
            return "failed", f"{self.planned.label}: its job ended without a word (exit code {self.process.returncode})"
        return ("done", result["done"]) if "done" in result else ("failed", result["failed"])


def _run_here(planned: PlannedStep, request: dict, run: RunPaths, watching: Watching) -> dict:
    """Run one step in this process (one job at a time), watched; its steps.json entry."""
    try:
        with watching(planned):
            return execute_request(request)
    except KeyboardInterrupt:
        raise StepInterrupted(f"in {planned.label}; its executed copy so far is {planned.executed_copy(run)}") from None


def run_steps(plan: list[PlannedStep], run: RunPaths, jobs: int, begin: Begin, request: Request,
              finish: Finish, watching: Watching = lambda planned: contextlib.nullcontext()) -> None:
    """Run (or reuse) every step of ``plan``, up to ``jobs`` at once, each once the steps it waits for are done.

    ``begin`` is called (in this process) when a step is ready and a slot is free, ``request`` gives what its job
    runs, ``watching(planned)`` is held while it runs (`lib.pipeline.progress`), ``finish`` is called when it has
    ended; a step that fails ends the run (`StepFailed`) once the steps
    running beside it have finished (and been recorded, so that the next run reuses them).
    """
    waits, free = prerequisites(plan, run), job_slots(jobs)
    numbers = {planned.label: number for number, planned in enumerate(plan, start=1)}
    pending, done, running, failures = list(plan), set(), [], []
    origin = time.perf_counter()
    jobs_folder = Path(tempfile.mkdtemp(prefix="study-jobs-"))  # the jobs' requests and results

    def record(planned: PlannedStep, entry: dict, slot: Slot, start: float) -> None:
        timing = {"started_s": round(start - origin, 1), "finished_s": round(time.perf_counter() - origin, 1)}
        finish(planned, entry | timing | {"where": slot.describe()})
        done.add(planned.label)

    try:
        while pending or running:
            ready = [p for p in pending if waits[p.label] <= done]
            if ready and free and not failures:
                planned = ready[0]
                pending.remove(planned)
                key, reused = begin(planned, numbers[planned.label])
                if reused is not None:
                    finish(planned, reused)
                    done.add(planned.label)
                elif jobs == 1:  # in this process, in the plan's order
                    slot, start = free[0], time.perf_counter()
                    record(planned, _run_here(planned, request(planned, key), run, watching), slot, start)
                else:
                    job = _Job(planned, key, free.pop(0), request(planned, key), jobs_folder, watching)
                    print(f"    {planned.label} runs on {job.slot.describe()}", flush=True)
                    running.append(job)
                continue
            if not running:
                break  # nothing runs and nothing more can start: a failure stopped the run
            running = _collect(running, free, failures, record)
    except StepInterrupted:  # a step run in this process (one job) already named itself
        raise
    except KeyboardInterrupt:  # Ctrl-C reached every job too (one process group): each ends its kernel
        for job in running:
            try:
                job.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.process.kill()
        raise StepInterrupted(f"in {', '.join(job.planned.label for job in running)}") from None
    finally:
        for job in running:  # the runner is leaving: no job goes on writing into the run
            job.process.kill()
            job.watch.close()
        shutil.rmtree(jobs_folder, ignore_errors=True)
    if failures:
        raise StepFailed("\n".join(failures))


def _collect(running: list[_Job], free: list[Slot], failures: list[str], record) -> list[_Job]:
    """Wait until at least one job has ended; record each that has (or its failure); the jobs still running."""
    while all(job.process.poll() is None for job in running):
        time.sleep(0.2)
    still = []
    for job in running:
        if job.process.poll() is None:
            still.append(job)
            continue
        free.append(job.slot)
        job.watch.close()
        outcome, detail = job.outcome()
        if outcome == "done":
            print(f"    {job.planned.label} done on {job.slot.describe()} ({detail['seconds']} s)", flush=True)
            record(job.planned, detail, job.slot, job.start)
        else:
            failures.append(detail)
            if len(running) > 1:
                print(f"    {job.planned.label} failed: waiting for the step(s) running beside it", flush=True)
    return still
