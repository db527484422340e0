"""How the audit and the split grow with the dataset: wall time and peak resident memory.

    .venv/bin/python benchmarks/audit_scale.py [--sizes 5000,20000,50000] [--classes 50]
                                               [--image-size 224] [--write benchmarks/RESULTS.md]

For each size it generates a class-folder dataset of that many small JPEGs (a few sizes,
RGB, greyscale and CMYK; a class colour with random blocks, so that images of a class look
alike), then runs, in a child process of its own (so that each peak is its own), the audit's recipe
(`lib.data.audit`) as the audit notebook runs it up to the split manifests: the file check, the params'
exclusions, the images' ImageNet features (weights from Keras' cache, or random with ``--random-weights``),
exact, pHash and feature near-duplicate pairs, the near-duplicate groups and every round's split.
It prints a Markdown table; ``--write`` appends it, with the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

SIZES = ((48, 48), (64, 48), (96, 72), (120, 160))  # (height, width)
MODES = ("RGB", "RGB", "L", "CMYK")


def make_dataset(root: Path, n_images: int, n_classes: int, seed: int = 0) -> Path:
    """``root/class_NN/img_NNNNNN.jpg``: ``n_images`` JPEGs spread evenly over ``n_classes``."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(n_classes, 3))
    for index in range(n_images):
        label = index % n_classes
        height, width = SIZES[rng.integers(len(SIZES))]
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[:] = colours[label]
        for _ in range(3):
            y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
            pixels[y : y + rng.integers(4, height // 2), x : x + rng.integers(4, width // 2)] = rng.integers(0, 256, 3)
        folder = root / f"class_{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert(MODES[index % len(MODES)]).save(folder / f"img_{index:06d}.jpg", quality=85)
    return root


def audit_and_split(folder: Path, image_size: int, weights: str | None, work: Path) -> dict:
    """The audit notebook's computation up to the splits, step by step: seconds per step."""
    from lib.core.config import parse_params
    from lib.data import audit
    from lib.data.sources import load_records
    from lib.training.features import audit_features

    params = parse_params({"data": {"source": "folder", "directory": str(folder), "image_size": [image_size] * 2},
                           "mobilenet_v2": {"weights": weights}})
    seconds, clock = {}, time.perf_counter()

    def lap(name):
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    images = audit.inspect_records(load_records(params.data), params.audit.max_image_pixels)
    images, warnings_found = audit.curate(images, params.data, params.audit)
    lap("inspect")
    features = audit_features(images, params, spill_dir=work)
    lap("features")
    pairs = audit.duplicate_pairs(images, features, params.audit)
    lap("pairs")
    images["group"], _ = audit.group_duplicates(images, pairs, params.split)
    lap("groups")
    splits, _ = audit.split_rounds(images, pairs, params)
    lap("splits")
    sizes = images.loc[images["usable"], "group"].value_counts()
    return {
        "images": int(len(images)), "usable": int(images["usable"].sum()),
        "pairs": pairs["kind"].value_counts().to_dict(),
        "groups": int(len(sizes)), "largest_group": int(sizes.max()), "rounds": len(splits),
        "features_memory_mapped": isinstance(features, np.memmap), "seconds": seconds,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def run_size(n_images: int, args) -> dict:
    """Generate the dataset (not timed) and audit it in a child process."""
    with tempfile.TemporaryDirectory(prefix=f"audit-scale-{n_images}-") as tmp:
        folder = make_dataset(Path(tmp) / "images", n_images, args.classes)
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--part", str(folder), "--json", str(out),
                   "--image-size", str(args.image_size)] + (["--random-weights"] if args.random_weights else [])
        started = time.perf_counter()
        subprocess.run(command, check=True)
        result = json.loads(out.read_text())
        return result | {"wall_s": round(time.perf_counter() - started, 1)}


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def summary_markdown(results: list[dict], args) -> str:
    lines = [
        f"## {date.today().isoformat()}: `benchmarks/audit_scale.py` ({cpu_model()}, "
        f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores)",
        "",
        f"Audit and split (every round) of generated class folders ({args.classes} classes; JPEGs of 48-160 px, "
        f"RGB, greyscale and CMYK), features at {args.image_size} px with "
        f"{'random' if args.random_weights else 'ImageNet'} weights; each size in its own process.",
        "",
        "| images | wall time | peak resident | inspect | features | pairs | groups | splits "
        "| pairs (exact / pHash / feature) | groups, largest |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        s, p = r["seconds"], r["pairs"]
        lines.append(
            f"| {r['images']:,} | {r['wall_s']:.0f} s | {r['peak_rss_gib']:.2f} GiB | {s['inspect']} s "
            f"| {s['features']} s | {s['pairs']} s | {s['groups']} s | {s['splits']} s "
            f"| {p.get('exact', 0)} / {p.get('near', 0)} / {p.get('feature', 0)} "
            f"| {r['groups']:,}, {r['largest_group']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--random-weights", action="store_true", help="MobileNetV2 without ImageNet weights")
    parser.add_argument("--write", type=Path, help="also append the summary to this Markdown file")
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)  # internal: audit this folder here
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    weights = None if args.random_weights else "imagenet"
    if args.part:
        with tempfile.TemporaryDirectory(prefix="audit-scale-work-") as work:
            args.json.write_text(json.dumps(audit_and_split(args.part, args.image_size, weights, Path(work))))
        return 0
    results = []
    for n_images in (int(n) for n in args.sizes.split(",")):
        results.append(run_size(n_images, args))
        print(json.dumps(results[-1]), flush=True)
    summary = summary_markdown(results, args)
    print(summary)
    if args.write:
        with open(args.write, "a") as handle:
            handle.write("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
