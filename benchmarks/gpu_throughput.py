"""The CNN's training speed where the study ran: from the run's own files, and in a steady-state probe.

    python3 benchmarks/gpu_throughput.py --run reports/default      # every training of a run
    python3 benchmarks/gpu_throughput.py --probe [--steps 40]       # the CNN alone, bfloat16 and float32

``--run`` reads what the model notebooks recorded (``metrics.json``: precision, training seconds,
epochs run; ``split.csv``: training images) and prints each training's rate over whole epochs:
host-side augmentation, validation passes and callbacks included, compilation too.
``--probe`` times training steps of the default CNN (batch 32, 224 px, 5 classes) on random images
held in memory, in mixed_bfloat16 and in float32, after a warm-up that compiles: the accelerator's
side alone, on the Keras backend that ``KERAS_BACKEND`` names. ``benchmarks/gpu_study.sh`` runs both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))


def run_rates(run_dir: Path) -> pd.DataFrame:
    """One row per training a run holds (every round's model, and the first round's methods)."""
    rows = []
    for metrics_file in sorted(run_dir.glob("rounds/*/*/metrics.json")) + sorted(
            run_dir.glob("rounds/*/*/methods/*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        round_dir = next(p for p in metrics_file.parents if p.parent.name == "rounds")
        split = pd.read_csv(round_dir / "split.csv")
        train_images = int((split["split"] == "train").sum())
        epochs = sum(metrics["epochs_run"].values())
        rows.append({
            "training": str(metrics_file.parent.relative_to(run_dir / "rounds")),
            "precision": metrics.get("precision", "?"),
            "epochs": epochs,
            "seconds": round(metrics["training_seconds"], 1),
            "images/s": round(train_images * epochs / metrics["training_seconds"], 1),
        })
    return pd.DataFrame(rows)


def probe(steps: int, batch_size: int = 32, image_size: int = 224) -> pd.DataFrame:
    """Steady-state training rate of the default CNN in mixed_bfloat16 and float32, compilation excluded."""
    import keras
    import numpy as np
    from cnn_throughput import training_flops_per_image

    from lib.core.config import parse_params
    from lib.training.models import build_cnn, set_precision

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size * steps, image_size, image_size, 3)).astype("float32")
    labels = np.eye(5, dtype="float32")[rng.integers(0, 5, batch_size * steps)]
    rows = []
    for precision in ("mixed_bfloat16", "float32"):
        set_precision(precision)
        model = build_cnn(5, (image_size, image_size), parse_params({}).cnn)
        model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
        model.fit(images[: 2 * batch_size], labels[: 2 * batch_size], batch_size=batch_size, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0)
        rate = len(images) / (time.perf_counter() - start)
        rows.append({"precision": precision, "backend": keras.backend.backend(), "batch": batch_size,
                     "images/s": round(rate, 1), "TFLOP/s": round(rate * training_flops_per_image(model) / 1e12, 2)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder (reports/<run_name>, or its .staging- copy)")
    parser.add_argument("--probe", action="store_true", help="time the CNN's training steps on random images")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per precision (probe)")
    args = parser.parse_args(argv)
    if args.run:
        rates = run_rates(args.run)
        print("The study's trainings (whole epochs: augmentation, validation and compilation included):")
        print(rates.to_string(index=False) if len(rates) else f"  none recorded in {args.run}")
    if args.probe:
        print("The CNN alone, random images in memory, compilation excluded:", flush=True)
        try:
            print(probe(args.steps).to_string(index=False), flush=True)
        except KeyboardInterrupt:  # gpu_study.sh gives it what time the call has left
            print("  stopped at its time limit (a CPU takes minutes here: the probe is meant for a GPU)")


if __name__ == "__main__":
    main()
