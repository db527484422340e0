"""The plan's steps run in order, or side by side (``--jobs N``): which are ready, each job's share of the machine.

A step is ready once the steps whose artefacts it reads have finished (`prerequisites`). With
``jobs`` above 1, up to that many ready steps run at once, each in a process of its own (forked
from the runner) that starts the step's kernel, on a `Slot` of its own: a set of the machine's
GPUs (``CUDA_VISIBLE_DEVICES``) where it has GPUs, and a share of the CPU cores (the process's
CPU affinity, which the kernel inherits). With one job, each step runs in the runner's process, in
the plan's order. A step's results do not depend on which slot it ran on or what ran beside it
(each kernel seeds its own training); ``steps.json`` records, per step, when it started and ended
(seconds after the first step began) and where it ran.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait

from lib.core.backends import visible_gpus
from lib.core.paths import RunPaths
from lib.pipeline.execute import ChildrenMemoryPeak, StepFailed, StepInterrupted
from lib.pipeline.steps import PlannedStep

# ``begin(planned, number)`` -> (its key, its steps.json entry when it is reused, else None)
Begin = Callable[[PlannedStep, int], tuple[str, dict | None]]
Execute = Callable[[PlannedStep, str], object]  # runs the step's notebook under that key
Finish = Callable[[PlannedStep, dict], None]  # records its steps.json entry


def prerequisites(plan: list[PlannedStep], run: RunPaths) -> dict[str, set[str]]:
    """The labels of the earlier steps each step waits for.

    A per-round step waits for the run-wide steps before it (the audit, which writes every round's
    split) and for the per-round steps whose model folder holds an artefact it reads (after the first
    round: the same model's first round, whose chosen method it reads). A run-wide step waits for
    every earlier step (the comparison and the report read them all).
    """
    waits: dict[str, set[str]] = {}
    for index, planned in enumerate(plan):
        earlier = plan[:index]
        if not planned.step.per_round:
            waits[planned.label] = {p.label for p in earlier}
            continue
        reads = planned.reads(run)
        waits[planned.label] = {
            p.label for p in earlier
            if not p.step.per_round
            or any(path.is_relative_to(run.round(p.round_name).model(p.step.model).root) for path in reads)
        }
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


def executed_entry(execute: Execute, planned: PlannedStep, key: str) -> dict:
    """Run one step (``execute(planned, key)``), timing it and sampling its kernel's memory: its steps.json entry."""
    start = time.perf_counter()
    with ChildrenMemoryPeak() as memory:
        execute(planned, key)
    return {"key": key, "seconds": round(time.perf_counter() - start, 1), "reused": False, "peak_rss_gib": memory.gib}


def _job(execute: Execute, planned: PlannedStep, key: str, slot: Slot, sending) -> None:
    """A forked job: on its slot, run the step; send back its entry, or why it failed."""
    os.sched_setaffinity(0, slot.cores)
    os.environ.update(slot.environment())
    try:
        sending.send(("done", executed_entry(execute, planned, key)))
    except BaseException as error:  # a failed cell, an interruption, anything: the runner reports it
        sending.send(("failed", str(error) or f"{planned.label}: {type(error).__name__}"))


def run_steps(plan: list[PlannedStep], run: RunPaths, jobs: int, begin: Begin, execute: Execute,
              finish: Finish) -> None:
    """Run (or reuse) every step of ``plan``, up to ``jobs`` at once, each once the steps it waits for are done.

    ``begin`` is called (in this process) when a step is ready and a slot is free, ``finish`` when it has
    ended; a step that fails ends the run (`StepFailed`) once the steps running beside it have finished
    (and been recorded, so that the next run reuses them).
    """
    waits, slots = prerequisites(plan, run), job_slots(jobs)
    numbers = {planned.label: number for number, planned in enumerate(plan, start=1)}
    pending, done, free = list(plan), set(), list(slots)
    running: dict = {}  # receiving end of a job's pipe -> (step, key, slot, process, start)
    failures: list[str] = []
    origin = time.perf_counter()

    def finished(planned: PlannedStep, entry: dict, slot: Slot, start: float) -> None:
        timing = {"started_s": round(start - origin, 1), "finished_s": round(time.perf_counter() - origin, 1)}
        finish(planned, entry | timing | {"where": slot.describe()})
        done.add(planned.label)

    def start_ready_steps() -> None:
        ready = [p for p in pending if waits[p.label] <= done]
        while ready and free and not failures:
            planned = ready.pop(0)
            pending.remove(planned)
            key, reused = begin(planned, numbers[planned.label])
            if reused is not None:
                finish(planned, reused)
                done.add(planned.label)
                ready = [p for p in pending if waits[p.label] <= done]
                continue
            slot, start = free.pop(0), time.perf_counter()
            if jobs == 1:  # in this process, in the plan's order
                try:
                    entry = executed_entry(execute, planned, key)
                except KeyboardInterrupt:
                    raise StepInterrupted(
                        f"in {planned.label}; its executed copy so far is {planned.executed_copy(run)}") from None
                free.append(slot)
                finished(planned, entry, slot, start)
                ready = [p for p in pending if waits[p.label] <= done]
                continue
            receiving, sending = multiprocessing.get_context("fork").Pipe(duplex=False)
            process = multiprocessing.get_context("fork").Process(
                target=_job, args=(execute, planned, key, slot, sending), name=planned.label)
            process.start()
            sending.close()
            print(f"    {planned.label} runs on {slot.describe()}", flush=True)
            running[receiving] = (planned, key, slot, process, start)

    try:
        start_ready_steps()
        while running:
            for receiving in wait(list(running)):
                planned, key, slot, process, start = running.pop(receiving)
                try:
                    outcome, detail = receiving.recv()
                except EOFError:
                    outcome, detail = "failed", f"{planned.label}: its job ended without a word (exit code {process.exitcode})"
                process.join()
                free.append(slot)
                if outcome == "done":
                    print(f"    {planned.label} done on {slot.describe()} ({detail['seconds']} s)", flush=True)
                    finished(planned, detail, slot, start)
                else:
                    failures.append(detail)
                    if running:
                        print(f"    {planned.label} failed: waiting for the {len(running)} step(s) running beside it",
                              flush=True)
            start_ready_steps()
    except StepInterrupted:  # a step run in this process (one job) already named itself
        raise
    except KeyboardInterrupt:  # Ctrl-C reached every job too (one process group): each ends its kernel
        labels = [entry[0].label for entry in running.values()]
        for entry in running.values():
            entry[3].join(timeout=60)
        raise StepInterrupted(f"in {', '.join(labels)}") from None
    if failures:
        raise StepFailed("\n".join(failures))
