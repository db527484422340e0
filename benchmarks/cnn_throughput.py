"""Training throughput of the study's CNN under different precisions and thread settings.

    .venv/bin/python benchmarks/cnn_throughput.py [--steps 6] [--image-size 224]

Random images in memory, batch 32, the default CNN and Adam: what ``training.precision``
and TensorFlow's thread pools do to images per second, and that as a fraction of the
CPU's fp32 peak (about 200 GFLOP/s for the two cores of the project's machines). Each
setting runs in a fresh process, because TensorFlow fixes its thread pools at start-up.
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
CPU_PEAK_GFLOPS = 200.0
SETTINGS = {
    "float32, TensorFlow's default threads": {"precision": "float32"},
    "float32, intra-op 2, inter-op 1": {"precision": "float32", "intra": 2, "inter": 1},
    "float32, intra-op 1, inter-op 2": {"precision": "float32", "intra": 1, "inter": 2},
    "mixed_bfloat16, default threads": {"precision": "mixed_bfloat16"},
    # The allocator settings target the page faults measured in the CNN's kernel: glibc
    # mmaps and unmaps every large activation buffer on every step.
    "float32, glibc malloc without mmap": {
        "precision": "float32",
        "env": {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"},
    },
    "float32, jemalloc": {"precision": "float32", "env": {"LD_PRELOAD": "libjemalloc.so.2"}},
    "float32, tcmalloc": {"precision": "float32", "env": {"LD_PRELOAD": "libtcmalloc_minimal.so.4"}},
    # Keras compiles with XLA only on accelerators by default; on a CPU it may fuse the
    # element-wise work around the convolutions.
    "float32, XLA (jit_compile=True)": {"precision": "float32", "jit_compile": True},
    # The study's default (training.deterministic): what same-numbers-every-run costs.
    "float32, TensorFlow op determinism": {"precision": "float32", "deterministic": True},
}


def training_flops_per_image(model) -> float:
    """Forward multiply-adds of the conv and dense layers x 2 FLOPs x 3 (forward + two backward products)."""
    import numpy as np

    macs = 0
    for layer in model.layers:
        if layer.__class__.__name__ in ("Conv2D", "Dense"):
            kernel = layer.kernel.shape
            outputs = np.prod(layer.output.shape[1:-1]) if len(layer.output.shape) > 2 else 1
            macs += outputs * np.prod(kernel)
    return 2 * 3 * float(macs)


def measure(setting: dict, steps: int, image_size: int) -> dict:
    import tensorflow as tf

    if "intra" in setting:
        tf.config.threading.set_intra_op_parallelism_threads(setting["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(setting["inter"])
    import keras
    import numpy as np

    sys.path.insert(0, str(PROJECT_ROOT))
    from lib.core.config import parse_params
    from lib.training.models import build_cnn, set_precision

    set_precision(setting["precision"])
    if setting.get("deterministic"):
        from lib.core.provenance import set_seed

        set_seed(0, deterministic=True)
    model = build_cnn(5, (image_size, image_size), parse_params({}).cnn)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", jit_compile=setting.get("jit_compile", "auto"))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32 * steps, image_size, image_size, 3)).astype("float32")
    labels = np.eye(5, dtype="float32")[rng.integers(0, 5, 32 * steps)]
    model.fit(images[:64], labels[:64], batch_size=32, epochs=1, verbose=0)  # compile and warm up
    start = time.perf_counter()
    model.fit(images, labels, batch_size=32, epochs=1, verbose=0, shuffle=False)
    rate = 32 * steps / (time.perf_counter() - start)
    gflop = training_flops_per_image(model) / 1e9
    return {"images_per_second": rate, "gflop_per_image": gflop, "gflops": rate * gflop}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed batches of 32 per setting")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--only", help="measure only the settings whose name contains this text")
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.setting:
        print(json.dumps(measure(SETTINGS[args.setting], args.steps, args.image_size)))
        return 0
    chosen = [name for name in SETTINGS if args.only is None or args.only in name]
    if not chosen:
        parser.error(f"--only {args.only!r} matches no setting; the settings are: {', '.join(SETTINGS)}")
    print(f"| setting | images/s | GFLOP/s | share of {CPU_PEAK_GFLOPS:.0f} GFLOP/s fp32 peak |\n|---|---|---|---|")
    for name in chosen:
        env = {**os.environ, **SETTINGS[name].get("env", {})}
        out = subprocess.run(
            [sys.executable, __file__, "--setting", name, "--steps", str(args.steps), "--image-size", str(args.image_size)],
            capture_output=True, text=True, check=True, env=env,
        ).stdout.strip().splitlines()[-1]
        result = json.loads(out)
        print(f"| {name} | {result['images_per_second']:.1f} | {result['gflops']:.0f} | "
              f"{100 * result['gflops'] / CPU_PEAK_GFLOPS:.0f} % |", flush=True)
        gflop_per_image = result["gflop_per_image"]
    print(f"\n({gflop_per_image:.2f} GFLOP per training image at {args.image_size} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
