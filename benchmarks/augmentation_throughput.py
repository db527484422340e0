"""Where the training augmentation runs: images per second of the study's augmentation, by implementation.

    .venv/bin/python benchmarks/augmentation_throughput.py [--image-size 224] [--seconds 10] [--step-ms 20]

Random uint8 images in memory, batch 32, the default ``augmentation`` params:

- Keras 3's preprocessing layers (RandomRotation, RandomTranslation, RandomShear, RandomZoom,
  RandomFlip, fill_mode nearest; what ``lib.data.inputs`` used until commit b40301c), called on
  each float32 batch, under TensorFlow and under JAX (each in a fresh process, since the
  backend is chosen at import);
- the host augmentation (`lib.data.augmentation.Augmentation`: one composed affine warp per image, OpenCV),
  called on each batch in one thread;
- the training stream (`lib.data.inputs.training_stream`: rows gathered, converted to float32,
  augmented) read batch after batch, with 0, 1, 2 ... worker threads, alone and with the
  consumer busy ``--step-ms`` per batch in a sleep (a training step waiting for a GPU: it
  releases the GIL, as a device step does), which is what the worker threads overlap.

Then a probe of why `lib.data.inputs.Batches` has its own worker threads rather than Keras'
``PyDataset(workers=N)``: a PyDataset that draws each epoch's order in ``on_epoch_begin`` (as
``Batches`` does), read through Keras' epoch iterator as ``fit`` reads it (one batch to build the
model, a reset, then epochs), counts per epoch the batches served from another epoch's order.

Prints one line per setting and, at the end, the figures as JSON (for benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def random_images(count: int, size: int):
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def images_per_second(serve_batch, seconds: float) -> float:
    """Batches served one after another for at least ``seconds`` (and 3 batches), after 2 to warm up."""
    for _ in range(2):
        serve_batch()
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        serve_batch()
        count += 1
    return count * BATCH / (time.perf_counter() - start)


def keras_layers(augmentation, seed: int):
    """The study's augmentation as Keras 3 preprocessing layers (as lib.data.inputs built it until commit b40301c)."""
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomRotation(augmentation.rotation_degrees / 360.0, fill_mode="nearest", seed=seed),
        layers.RandomTranslation(augmentation.height_shift, augmentation.width_shift, fill_mode="nearest",
                                 seed=seed + 1),
        layers.RandomShear(x_factor=augmentation.shear, y_factor=augmentation.shear, fill_mode="nearest",
                           seed=seed + 2),
        layers.RandomZoom(augmentation.zoom, augmentation.zoom, fill_mode="nearest", seed=seed + 3),
        layers.RandomFlip("horizontal", seed=seed + 4),
    ], name="augmentation")


def measure_keras_layers(image_size: int, seconds: float) -> float:
    """Runs in a process whose KERAS_BACKEND was set before Keras was imported."""
    import keras

    from lib.core.config import AugmentationParams

    augment = keras_layers(AugmentationParams(), seed=0)
    batch = random_images(BATCH, image_size).astype("float32")
    return images_per_second(lambda: keras.ops.convert_to_numpy(augment(batch, training=True)), seconds)


def measure_host(image_size: int, seconds: float, step_ms: float) -> dict[str, float]:
    from lib.core.config import AugmentationParams
    from lib.core.minority import METHODS
    from lib.data.augmentation import Augmentation
    from lib.data.inputs import training_stream
    from lib.data.pixels import SplitData

    augment = Augmentation(AugmentationParams(), seed=0)
    batch = random_images(BATCH, image_size)
    calls = iter(range(10**9))
    one_thread = images_per_second(lambda: augment(batch, 0, next(calls)), seconds)
    figures = {"host augmentation, one calling thread": one_thread}
    images = random_images(16 * BATCH, image_size)
    data = SplitData(images, images[:, 0, 0, 0] % 3, None)
    settings = [(None, 0), *((augment, threads) for threads in (0, 1, 2, 4))]
    for step in (0.0, step_ms):
        for augmenter, threads in settings:
            stream = training_stream(data, 3, BATCH, METHODS["class_weight"], 0, augmenter, threads)
            position = iter(range(10**9))

            def serve_batch():
                index = next(position) % len(stream)
                if index == 0:
                    stream.on_epoch_begin()
                stream[index]
                time.sleep(step / 1000)

            name = (f"training stream, {'augmented' if augmenter else 'not augmented'}, {threads} worker threads"
                    + (f", consumer busy {step:g} ms per batch" if step else ""))
            figures[name] = images_per_second(serve_batch, seconds)
    return figures


def stale_batches_of_keras_workers(workers: int, epochs: int = 3, batches: int = 40) -> list[int]:
    """Per epoch, how many of its batches Keras' PyDataset adapter served from another epoch's order."""
    import keras
    import numpy as np
    from keras.src.trainers.epoch_iterator import EpochIterator

    class EpochNumbered(keras.utils.PyDataset):
        """Batch i of the epoch begun n-th is the number 100 n + i (read as the order drawn for that epoch)."""

        def __init__(self):
            super().__init__(workers=workers)
            self.epoch = 0

        def __len__(self):
            return batches

        def __getitem__(self, index):
            time.sleep(np.random.default_rng().uniform(0, 0.01))  # work of varying length
            return np.array([[100.0 * self.epoch + index]], "float32"), np.zeros((1, 1), "float32")

        def on_epoch_begin(self):
            self.epoch += 1

    iterator = EpochIterator(x=EpochNumbered())
    for _ in iterator:  # fit's symbolic build: one batch, then a reset
        break
    iterator.reset()
    stale = []
    for epoch in range(2, epochs + 2):  # the build pass began epoch 1
        served = [int(data[0][0][0, 0]) for _, _, data in iterator]
        stale.append(sum(value // 100 != epoch for value in served))
    return stale


def in_subprocess(backend: str, image_size: int, seconds: float) -> float:
    env = os.environ | {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--keras-layers", "--image-size", str(image_size),
                           "--seconds", str(seconds)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measuring time per setting (after 2 warm-up batches)")
    parser.add_argument("--step-ms", type=float, default=20.0, help="the simulated training step per batch")
    parser.add_argument("--keras-layers", action="store_true", help=argparse.SUPPRESS)  # the subprocess's part
    args = parser.parse_args()
    if args.keras_layers:
        print(json.dumps(measure_keras_layers(args.image_size, args.seconds)))
        return
    sys.path.insert(0, str(PROJECT_ROOT))
    figures = {}
    for backend in ("tensorflow", "jax"):
        figures[f"Keras layers, {backend}"] = in_subprocess(backend, args.image_size, args.seconds)
        print(f"{f'Keras layers, {backend}':80s} {figures[f'Keras layers, {backend}']:8.0f} images/s", flush=True)
    for name, rate in measure_host(args.image_size, args.seconds, args.step_ms).items():
        figures[name] = rate
        print(f"{name:80s} {rate:8.0f} images/s", flush=True)
    for workers in (1, 4):
        name = f"Keras PyDataset(workers={workers}): stale batches in each of 3 epochs of 40, 3 tries"
        figures[name] = [stale_batches_of_keras_workers(workers) for _ in range(3)]
        print(f"{name:80s} {figures[name]}", flush=True)
    print(json.dumps({"image_size": args.image_size, "batch": BATCH, "cpus": os.cpu_count(),
                      "load_average": os.getloadavg(),
                      "figures": {k: v if isinstance(v, list) else round(v, 1) for k, v in figures.items()}},
                     indent=1))


if __name__ == "__main__":
    main()
