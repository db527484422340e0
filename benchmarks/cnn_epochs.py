"""The default CNN's epochs through the study's own data path, under thread settings side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/cnn_epochs.py [--epochs 4] [--train-images 1306] [--only TEXT ...]

A same-size stand-in of a default round (random uint8 images at 224 px: 1,306 training images,
augmented on the host by ``lib.data.augmentation.Augmentation``, and 263 validation images), the default
CNN, ``training.precision: auto`` and op determinism as the study trains it (compiled as
``fit_phase`` compiles it; no early stopping, so every epoch runs). Each setting runs in a fresh
process (TensorFlow fixes its thread pools at start-up, OpenMP reads its variables once). For every
epoch it prints the seconds, the images/s (training + validation images), the process's CPU seconds
per wall second, the CPU seconds of each group of threads (TensorFlow's pools, the batch workers,
OpenCV's pool, the rest), and the load average; then one summary row per setting, ready for
benchmarks/RESULTS.md. The first epoch (tracing, warm-up) is reported and left out of the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CPUS = len(os.sched_getaffinity(0))
# What each setting changes from the project's defaults: environment variables set before the process starts
# (OPENCV_FOR_THREADS_NUM: OpenCV's pool, which lib.data.inputs otherwise sets to 1 thread per warp), the batch
# workers (``training.data_workers``; each keeps one batch ahead, so this is also the prefetch depth) and
# TensorFlow's inter-op pool (None: TensorFlow's default, one thread per CPU, as its intra-op pool); and whether the
# streams reach ``fit`` by Keras' PyDataset path (what the study did before `lib.data.inputs.keras_input`: under
# TensorFlow, tf.data with its autotuning, and the batch order shuffled again by Keras) or through ``keras_input``
# (no autotuning, the batches in the order the stream drew).
SETTINGS = {
    "before the epoch fix: min(8, CPUs) batch workers, OpenCV on every CPU, PyDataset path": {
        "data_workers": min(8, CPUS), "env": {"OPENCV_FOR_THREADS_NUM": str(CPUS)}, "keras_pydataset": True},
    "3d6ead4: 1 batch worker, OpenCV 1 thread per warp, PyDataset path": {"keras_pydataset": True},
    "project defaults: 1 batch worker, OpenCV 1 thread per warp, keras_input": {},
    "0 batch workers (augmentation in the training loop)": {"data_workers": 0},
    "min(8, CPUs) batch workers, OpenCV 1 thread": {"data_workers": min(8, CPUS)},
    "4 batch workers (4 batches ahead), OpenCV 1 thread": {"data_workers": 4},
    "1 batch worker, OpenCV on every CPU": {"env": {"OPENCV_FOR_THREADS_NUM": str(CPUS)}},
    "TF inter-op 1": {"inter": 1},
    "OMP_NUM_THREADS=1, KMP_BLOCKTIME=0": {"env": {"OMP_NUM_THREADS": "1", "KMP_BLOCKTIME": "0"}},
    "TF_ENABLE_ONEDNN_OPTS=0 (other kernels: other numbers)": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
}


def thread_cpu_seconds() -> Counter:
    """CPU seconds (user + system) of each of this process's threads, by (group, thread id); the group is a Python
    thread's own name (Python does not name its OS threads), else the OS thread's (TensorFlow's inter-op pool is
    "tf_Compute"; its intra-op pool, where oneDNN computes, is unnamed: "python"), digits dropped."""
    ticks = os.sysconf("SC_CLK_TCK")
    python_names = {thread.native_id: thread.name for thread in threading.enumerate()}
    seconds = Counter()
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = python_names.get(int(task.name)) or stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        seconds[(re.sub(r"[\d_-]+$", "", name) or name, task.name)] += (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def by_group(seconds: Counter) -> Counter:
    grouped = Counter()
    for (group, _), value in seconds.items():
        grouped[group] += value
    return grouped


def measure(setting: dict, epochs: int, train_images: int, val_images: int) -> tuple[list[dict], dict]:
    """Train the default CNN for ``epochs`` epochs under ``setting``: one record per epoch, and the pools' sizes."""
    import tensorflow as tf

    if "inter" in setting:
        tf.config.threading.set_inter_op_parallelism_threads(setting["inter"])
    import cv2
    import keras
    import numpy as np

    sys.path.insert(0, str(PROJECT_ROOT))
    from lib.core.config import parse_params
    from lib.core.minority import METHODS
    from lib.core.provenance import set_seed
    from lib.data.augmentation import build_augmentation
    from lib.data.inputs import data_workers, evaluation_stream, keras_input, training_stream
    from lib.data.pixels import SplitData
    from lib.training.models import build_cnn, set_precision
    from lib.training.train import optimizer

    params = parse_params({})
    workers = setting.get("data_workers", data_workers(params.training.data_workers, accelerator=False))
    set_seed(0, deterministic=params.training.deterministic)
    set_precision(params.training.precision)
    rng = np.random.default_rng(0)
    size = params.data.image_size

    def split(count):
        return SplitData(rng.integers(0, 256, (count, *size, 3), dtype=np.uint8), rng.integers(0, 5, count), None)

    train, val = split(train_images), split(val_images)
    batch = params.training.batch_size
    train_ds = training_stream(train, 5, batch, METHODS["class_weight"], 0, build_augmentation(params.augmentation, 0),
                               workers)
    val_ds = evaluation_stream(val, 5, batch, workers)
    records = []

    class EpochProbe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.cpu_start = time.perf_counter(), thread_cpu_seconds()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            cpu = thread_cpu_seconds()
            cpu.subtract(self.cpu_start)
            records.append({"epoch": epoch + 1, "seconds": seconds,
                            "images_per_second": (train_images + val_images) / seconds,
                            "cpu_per_wall": sum(cpu.values()) / seconds,
                            "threads_cpu": {name: round(value, 1) for name, value in by_group(cpu).most_common()
                                            if value >= 0.1},
                            # how the work spread: a pool that computes on one thread where it could on two
                            # shows as one thread with most of the CPU seconds
                            "busiest_threads_share": [round(value / max(sum(cpu.values()), 1e-9), 2)
                                                      for _, value in cpu.most_common(4)],
                            "load_average": os.getloadavg()[0]})
            print(json.dumps(records[-1]), file=sys.stderr, flush=True)

    model = build_cnn(5, size, params.cnn)
    # compiled as lib.training.train.fit_phase compiles the CNN's phase (no early stopping: every epoch runs)
    model.compile(optimizer(params.cnn.training, len(train_ds)), keras.losses.CategoricalCrossentropy(),
                  metrics=["accuracy"])
    if setting.get("keras_pydataset"):  # as the study fitted before: Keras' PyDataset path, its batch order shuffled
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[EpochProbe()], verbose=0)
    else:  # as lib.training.train.fit_phase fits now
        model.fit(keras_input(train_ds), validation_data=keras_input(val_ds), epochs=epochs, callbacks=[EpochProbe()],
                  verbose=0, shuffle=False)
    return records, {"tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                     "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                     "opencv": cv2.getNumThreads(), "data_workers": workers,
                     "os_threads": len(list(Path("/proc/self/task").iterdir()))}


def summary_row(name: str, records: list[dict], pools: dict) -> str:
    """One Markdown row: every epoch's seconds; median, spread and images/s without the warm-up epoch."""
    timed = records[1:] or records
    median = statistics.median(r["seconds"] for r in timed)
    every_epoch = " / ".join(f"{r['seconds']:.1f}" for r in records)
    return (f"| {name} | {every_epoch} | {median:.1f} | "
            f"{100 * (max(r['seconds'] for r in timed) / median - 1):.0f} % | "
            f"{statistics.median(r['images_per_second'] for r in timed):.0f} | "
            f"{statistics.median(r['cpu_per_wall'] for r in records):.2f} | "
            f"{pools['tf_intra_op']}/{pools['tf_inter_op']}, {pools['opencv']}, {pools['data_workers']} "
            f"({pools['os_threads']}) | "
            f"{min(r['load_average'] for r in records):.1f}-{max(r['load_average'] for r in records):.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per setting (the first is warm-up)")
    parser.add_argument("--train-images", type=int, default=1306)
    parser.add_argument("--val-images", type=int, default=263)
    parser.add_argument("--only", action="append",
                        help="measure only the settings whose name contains this text (repeatable)")
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.setting:
        records, pools = measure(SETTINGS[args.setting], args.epochs, args.train_images, args.val_images)
        print(json.dumps({"records": records, "pools": pools}))
        return 0
    chosen = [name for name in SETTINGS if args.only is None or any(text in name for text in args.only)]
    if not chosen:
        parser.error(f"--only {args.only!r} matches no setting; the settings are: {', '.join(SETTINGS)}")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start; {args.train_images} + "
          f"{args.val_images} images per epoch\n")
    print("| setting | epoch seconds (1st: warm-up) | median | slowest over median | images/s | CPU s per s | "
          "threads: TF intra/inter (0: one per CPU), OpenCV, batch workers (OS threads) | load average |\n"
          "|---|---|---|---|---|---|---|---|")
    details = {}
    for name in chosen:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **SETTINGS[name].get("env", {})}
        done = subprocess.run([sys.executable, __file__, "--setting", name, "--epochs", str(args.epochs),
                               "--train-images", str(args.train_images), "--val-images", str(args.val_images)],
                              capture_output=True, text=True, env=env)
        if done.returncode:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1]} |", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        details[name] = result
        print(summary_row(name, result["records"], result["pools"]), flush=True)
    print("\nCPU seconds per thread group, and the busiest 4 threads' shares of them, each epoch:")
    for name, result in details.items():
        print(f"- {name}: " + "; ".join(f"{json.dumps(r['threads_cpu'])} busiest {r['busiest_threads_share']}"
                                        for r in result["records"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
