"""Time the study's pipeline against the original study's protocol, on the same split and epochs.

    .venv/bin/python benchmarks/benchmark.py [--params params/default.yaml] [--parts ours,baseline,...]
                                             [--from-run reports/default] [--write benchmarks/RESULTS.md]

Parts (each runs in its own process, so that each peak resident memory is its own):

- ``ours``: ``python -m lib.run --force`` on the params (run name ``benchmark``, in a
  temporary reports folder): the whole study, audit to PDF, as ``./run_all.sh`` runs it.
- ``baseline``: the original notebook's data path on our split: Keras' legacy
  ``ImageDataGenerator.flow_from_dataframe`` decoding every JPEG in every epoch, the same
  CNN, and MobileNetV2 with its full forward pass in every epoch; same epochs, class
  weights, optimiser and early stopping.
- ``plain``: our MobileNetV2 notebook with ``mobilenet_v2.activation_cache: false``, seed 42.
- ``spread``: our MobileNetV2 notebook, with its activation cache, with seeds 42, 43 and 44 on
  the same split (the run-to-run spread the plain path is compared against; seed 42's time
  is the one compared with the plain path's).
- ``precision``: our CNN notebook in float32 with seed 42, against the CNN in the precision
  ``training.precision`` picks on this machine (`lib.training.models.auto_precision`) with seeds 42, 43
  and 44 on the same split (seed 42 taken from ``ours`` when it ran): what the 16-bit policy
  saves, and whether float32's score falls inside its run-to-run spread.
- ``peak``: this machine's matrix-multiply rate in float32 and bfloat16 (the practical peak
  the CNN's throughput is compared with, besides the nominal 200 GFLOP/s).
- ``memory``: peak memory of the data path (decode, one augmented epoch, MobileNetV2's
  activation cache) on the default subset and on all 42 coarse classes.

The baseline, plain, spread and precision parts use the data and round-42 split of the ``ours`` part;
without it, ``--from-run`` names an earlier run of the same data, split and audit params
(e.g. ``reports/default``) whose split they use instead.

It prints a Markdown summary; ``--write`` also saves it, with the date and the machine.
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

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lib.core.config import load_params  # noqa: E402
from lib.core.paths import RunPaths, run_paths  # noqa: E402
from lib.core.study import MODELS  # noqa: E402

PARTS = ("peak", "ours", "baseline", "plain", "spread", "precision", "memory")
NEEDS_SPLIT = {"baseline", "plain", "spread", "precision"}
CPU_PEAK_GFLOPS = 200.0  # two cores of the benchmark machine, fp32: the nominal figure the speed targets use
CNN_GFLOP_PER_TRAINING_IMAGE = 2.8  # forward and backward at 224 px
BENCHMARK_SEED = 42
ROUND = f"seed-{BENCHMARK_SEED}"


def peak_rss_gib() -> float:
    """The largest resident set of this process or any child it waited for (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 2**20


def benchmark_run(work: Path) -> dict:
    """What our benchmarked run changes in the params: its name, a temporary reports folder (so
    that the user's reports/ and its published report stay as they are), and one round with the
    original study's class weights (the protocol the baseline follows; the speed targets time one seed)."""
    return {"run_name": "benchmark", "reports_dir": str(work / "reports"),
            "evaluation": {"scheme": "holdout", "seeds": [BENCHMARK_SEED]}, "minority": {"methods": ["class_weight"]}}


def params_variant(params_file: Path, folder: Path, name: str, **changes) -> Path:
    """A copy of the params file with some sections changed (nested dicts are merged)."""
    values = yaml.safe_load(params_file.read_text()) or {}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


# --- the original study's protocol ------------------------------------------------------


def original_protocol(params_file: Path, split_manifest: Path, work_dir: Path) -> dict:
    """Train and test both models the way the original notebook fed them; returns timings and metrics."""
    import numpy as np

    # Keras 3 no longer exports ImageDataGenerator but still ships it, unchanged, as legacy code
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    from lib.core.minority import METHODS
    from lib.core.provenance import set_seed
    from lib.data.split import read_split
    from lib.training.evaluate import classification_metrics
    from lib.training.models import (
        build_cnn,
        build_mobilenet_v2,
        set_precision,
        unfreeze_top,
    )
    from lib.training.train import fit_phase

    params = load_params(params_file)
    set_seed(params.seed, deterministic=params.training.deterministic)
    set_precision("float32")  # the original notebook's precision, whatever this machine could do
    manifest = read_split(split_manifest)
    names = sorted(manifest.loc[manifest["split"] == "train", "label"].unique())
    frames = {split: manifest[manifest["split"] == split] for split in ("train", "val", "test")}
    aug, size, batch = params.augmentation, tuple(params.data.image_size), params.training.batch_size
    augmenting = ImageDataGenerator(
        rotation_range=aug.rotation_degrees, width_shift_range=aug.width_shift, height_shift_range=aug.height_shift,
        shear_range=aug.shear, zoom_range=aug.zoom, horizontal_flip=aug.horizontal_flip, fill_mode="nearest",
    )

    def flow(split, generator=None, shuffle=False):
        # our models scale pixels themselves, so the generators leave out the original's rescale=1/255
        return (generator or ImageDataGenerator()).flow_from_dataframe(
            frames[split], x_col="path", y_col="label", classes=names, target_size=size,
            class_mode="categorical", batch_size=batch, shuffle=shuffle, seed=params.seed,
        )

    train_labels = np.array([names.index(label) for label in frames["train"]["label"]])
    class_weight = METHODS["class_weight"].class_weight(train_labels, len(names))
    results = {"train_images": len(frames["train"])}

    def train_and_test(name, model, phases):
        start = time.perf_counter()
        histories = []
        for phase_name, phase, before in phases:
            before()
            histories.append(fit_phase(
                model, flow("train", augmenting, shuffle=True), flow("val"), phase, name=phase_name,
                class_weight=class_weight, verbose=params.training.verbose,
            ))
        trained = time.perf_counter()
        test = flow("test")
        probabilities = model.predict(test, verbose=0)
        metrics = classification_metrics(test.classes, probabilities, names)
        results[name] = {
            "training_seconds": trained - start,
            "test_seconds": time.perf_counter() - trained,
            "epochs": [len(h) for h in histories],
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
        }

    cnn = build_cnn(len(names), size, params.cnn)
    train_and_test("cnn", cnn, [("training", params.cnn.training, lambda: None)])
    mobilenet, base = build_mobilenet_v2(len(names), size, params.mobilenet_v2)
    train_and_test("mobilenetv2", mobilenet, [
        ("head", params.mobilenet_v2.head, lambda: None),
        ("fine-tune", params.mobilenet_v2.fine_tune, lambda: unfreeze_top(base, params.mobilenet_v2.fine_tune_layers)),
    ])
    return results


def split_of_earlier_run(run_dir: Path, params_file: Path) -> Path:
    """The round-42 split manifest of an earlier run made with the same data, split and audit params."""
    earlier = RunPaths(run_dir)
    manifest = earlier.round(ROUND).split_manifest
    if not (earlier.params_used.is_file() and manifest.is_file()):
        raise SystemExit(f"--from-run {run_dir}: no params or round {ROUND} split there (expected {manifest})")
    used, wanted = json.loads(earlier.params_used.read_text()), load_params(params_file).to_dict()
    for section in ("data", "split", "audit"):
        if used[section] != wanted[section]:
            raise SystemExit(f"--from-run {run_dir} was made with other '{section}' params than {params_file}")
    return manifest


# --- parts, each in a child process ----------------------------------------------------


def part_ours(params_file: Path, work: Path) -> dict:
    from lib.run import main

    variant = params_variant(params_file, work, "ours", **benchmark_run(work))
    start = time.perf_counter()
    if main([str(variant), "--force"]) != 0:
        raise SystemExit("our pipeline failed")
    run = run_paths(load_params(variant))
    steps = json.loads(run.steps.read_text())
    result = {"wall_seconds": time.perf_counter() - start, "run_dir": str(run.root),
              "steps": {name: step["seconds"] for name, step in steps.items()},
              "step_peak_rss_gib": {name: step.get("peak_rss_gib") for name, step in steps.items()}}
    for model in MODELS:
        metrics = json.loads(run.round(ROUND).model(model).metrics.read_text())
        result[model] = {key: metrics[key] for key in
                         ("accuracy", "macro_f1", "training_seconds", "epochs_run", "training_inputs", "precision")}
    result["train_images"] = json.loads(run.audit_summary.read_text())["split_sizes"]["train"]
    return result


# The original study's two models, which the baseline (`part_baseline`) re-implements under our models' names.
ORIGINAL_MODELS = ("cnn", "mobilenetv2")
# A notebook part's variants: which model's notebook, and what it changes in the params.
NOTEBOOK_VARIANTS = {
    "plain": ("mobilenetv2", {"mobilenet_v2": {"activation_cache": False}}),
    "cached": ("mobilenetv2", {"mobilenet_v2": {"activation_cache": True}}),
    "cnn-float32": ("cnn", {"training": {"precision": "float32"}}),
    "cnn-auto": ("cnn", {"training": {"precision": "auto"}}),
}


def _notebook_seconds(params_file: Path, work: Path, run_dir: Path, name: str, seed: int, model: str = "mobilenetv2",
                      **changes) -> dict:
    """Run one model's notebook with training seed ``seed`` on the round-42 split of a finished run."""
    import shutil

    import papermill

    from lib.core.paths import NOTEBOOKS_DIR

    one_round = {"evaluation": {"scheme": "holdout", "seeds": [seed]}}
    variant = params_variant(params_file, work, name, **(benchmark_run(work) | changes | one_round))
    target = run_paths(load_params(variant), work / name)
    shutil.copytree(run_dir / "data", target.data_dir)
    # the same split for every training seed: the spread measured is that of training alone
    target.round(f"seed-{seed}").root.mkdir(parents=True)
    shutil.copy(run_dir / "rounds" / ROUND / "split.csv", target.round(f"seed-{seed}").split_manifest)
    start = time.perf_counter()
    notebook = MODELS[model].notebook
    papermill.execute_notebook(
        NOTEBOOKS_DIR / notebook, target.root / notebook,
        parameters={"params_file": str(variant), "run_dir": str(target.root)}, cwd=str(NOTEBOOKS_DIR),
        progress_bar=False,
    )
    seconds = time.perf_counter() - start
    metrics = json.loads(target.round(f"seed-{seed}").model(model).metrics.read_text())
    return {"notebook_seconds": seconds, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "training_seconds": metrics["training_seconds"], "epochs_run": metrics["epochs_run"],
            "precision": metrics["precision"]}


def part_peak() -> dict:
    """GFLOP/s of a 4096 x 4096 matrix product in float32 and bfloat16: what these cores can do at best."""
    import tensorflow as tf

    size, repeats, rates = 4096, 10, {}
    for dtype in (tf.float32, tf.bfloat16):
        a, b = (tf.cast(tf.random.normal((size, size), seed=i), dtype) for i in (1, 2))
        product = tf.function(tf.matmul)
        product(a, b).numpy()  # trace and warm up
        start = time.perf_counter()
        for _ in range(repeats):
            result = product(a, b)
        result.numpy()
        rates[dtype.name] = 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9
    return {"matmul_gflops": rates}


def part_memory(params_file: Path, work: Path, which: str) -> dict:
    """Peak memory of the data path and MobileNetV2's activation cache on one dataset size."""
    import numpy as np

    from lib.core.minority import METHODS
    from lib.core.step import StepRun
    from lib.data import audit, rounds, split
    from lib.data.sources import load_records
    from lib.training import activation_cache, experiment, models

    changes = {} if which == "default" else {"data": {"grocery_store": {"label_level": "coarse", "classes": None,
                                                                         "max_per_class": {}}}}
    variant = params_variant(params_file, work, f"memory-{which}", run_name=f"memory-{which}",
                             reports_dir=str(work / "reports"), **changes)
    params = load_params(variant)
    images = audit.inspect_records(load_records(params.data), params.audit.max_image_pixels)
    name, kinds = next(iter(rounds.assign_round_splits(images, np.arange(len(images)), params).items()))
    split.write_split_manifest(images.assign(split=kinds["used"]), run_paths(params).round(name).split_manifest)
    start = time.perf_counter()
    prepared = experiment.prepare(StepRun(params, run_paths(params)), "mobilenetv2")  # the data path, then its cache
    for _ in prepared.training_stream(METHODS["class_weight"]):  # one augmented epoch of the CNN's stream
        pass
    model, base = models.build_mobilenet_v2(prepared.n_classes, params.data.image_size, params.mobilenet_v2)
    cache = activation_cache.ActivationCache(prepared.round_inputs(), prepared.params.mobilenet_v2, model, base)
    return {"images": int(images["usable"].sum()), "classes": prepared.n_classes, "seconds": time.perf_counter() - start,
            "cache": cache.summary()}


def precision_part(params_file: Path, work: Path, run_dir: Path, ours: dict | None) -> dict:
    """The CNN in float32 (seed 42) and in the precision 'auto' picks here (seeds 42-44), on one split."""
    float32 = run_part("notebook", "cnn-float32-42", params_file, work, [str(run_dir), "42", "cnn-float32"])
    auto = []
    for seed in (42, 43, 44):
        if seed == BENCHMARK_SEED and ours:  # the same notebook, params, split and seed: the same training
            auto.append({**ours["cnn"], "notebook_seconds": ours["steps"][f"rounds/{ROUND}/{MODELS['cnn'].notebook}"]})
        else:
            auto.append(run_part("notebook", f"cnn-auto-{seed}", params_file, work, [str(run_dir), str(seed), "cnn-auto"]))
    return {"float32": float32, "auto": auto}


def run_part(name: str, label: str, params_file: Path, work: Path, extra: list[str]) -> dict:
    """Run part ``name`` in a fresh Python process; returns what it wrote, as JSON, to ``work/<label>.json``
    (the child takes ``work`` to be the folder of that file)."""
    out = work / f"{label}.json"
    command = [sys.executable, __file__, "--params", str(params_file), "--part", name, "--json", str(out), *extra]
    print(f"\n=== {label}: {name} {' '.join(extra)}", flush=True)
    subprocess.run(command, check=True, cwd=PROJECT_ROOT)
    result = json.loads(out.read_text())
    # printed as each part ends, so that a later part's failure does not lose this one's figures
    print(json.dumps(result, default=str), flush=True)
    return result


# --- the summary -------------------------------------------------------------------------


def images_per_second(model: dict, train_images: int) -> float:
    epochs = model["epochs_run"] if isinstance(model.get("epochs_run"), dict) else None
    total = sum(epochs.values()) if epochs else sum(model["epochs"])
    return train_images * total / model["training_seconds"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def step_figures(ours: dict) -> str:
    memory = ours.get("step_peak_rss_gib", {})  # absent in runs made before steps recorded it
    return ", ".join(f"{name} {seconds:.0f} s" + (f" / {memory[name]:.2f} GiB" if memory.get(name) is not None else "")
                     for name, seconds in ours["steps"].items())


def cnn_throughput_line(ours: dict, peak: dict | None) -> str:
    """The CNN's training rate in GFLOP/s, as a share of the nominal fp32 peak and of the measured peaks."""
    cnn = ours["cnn"]
    rate = images_per_second(cnn, ours["train_images"])
    gflops = rate * CNN_GFLOP_PER_TRAINING_IMAGE
    line = (f"- CNN training throughput ({cnn.get('precision', 'float32')}): {rate:.1f} img/s x "
            f"{CNN_GFLOP_PER_TRAINING_IMAGE} GFLOP = {gflops:.0f} GFLOP/s = **{100 * gflops / CPU_PEAK_GFLOPS:.0f} % "
            f"of the nominal fp32 peak** ({CPU_PEAK_GFLOPS:.0f} GFLOP/s; validation passes and augmentation included)")
    if peak:
        shares = ", ".join(f"{100 * gflops / value:.0f} % of the measured {dtype} peak ({value:.0f} GFLOP/s)"
                           for dtype, value in peak["matmul_gflops"].items())
        line += f"; {shares}"
    return line


def spread_line(label: str, seeds: list[dict], reference_label: str, reference: dict) -> str:
    """Macro-F1 over training seeds 42-44, and whether the seed-42 reference falls inside their range."""
    scores = [run["macro_f1"] for run in seeds]
    inside = min(scores) <= reference["macro_f1"] <= max(scores)
    return (f"- {label} over training seeds 42, 43, 44: macro-F1 {', '.join(f'{s:.3f}' for s in scores)} "
            f"(range {min(scores):.3f}-{max(scores):.3f}); {reference_label}, seed 42: {reference['macro_f1']:.3f}, "
            + ("inside" if inside else "outside") + " that range")


def seconds_per_epoch(model: dict) -> float:
    return model["training_seconds"] / sum(model["epochs_run"].values())


def precision_lines(precision: dict) -> list[str]:
    """The CNN in float32 against the CNN in the 'auto' precision, over its seeds."""
    float32, auto = precision["float32"], precision["auto"]
    policy = auto[0].get("precision", "auto")
    return ["### CNN notebook: float32 vs the precision 'auto' picks here (same split)", "",
            f"- float32, seed 42: notebook {float32['notebook_seconds']:.0f} s, training "
            f"{float32['training_seconds']:.0f} s, epochs {float32['epochs_run']}; test accuracy "
            f"{float32['accuracy']:.3f}, macro-F1 {float32['macro_f1']:.3f}",
            f"- {policy}, seed 42: notebook {auto[0]['notebook_seconds']:.0f} s, training "
            f"{auto[0]['training_seconds']:.0f} s, epochs {auto[0]['epochs_run']}; test accuracy "
            f"{auto[0]['accuracy']:.3f}, macro-F1 {auto[0]['macro_f1']:.3f}: **"
            f"{seconds_per_epoch(float32) / seconds_per_epoch(auto[0]):.2f}x faster per epoch** "
            f"({seconds_per_epoch(float32):.1f} s against {seconds_per_epoch(auto[0]):.1f} s, validation included; "
            "early stopping ends each run at its own epoch)",
            spread_line(policy, auto, "float32", float32), ""]


def summary_markdown(results: dict, machine: dict, commit: str) -> str:
    lines = [f"## {date.today().isoformat()}: {cpu_model()}, {machine.get('cpu_count', '?')} cores, "
             f"commit {commit[:10]}", ""]
    if results.get("split_from"):
        lines += [f"Data and split (round {ROUND}) from the earlier run `{results['split_from']}`.", ""]
    ours, base = results.get("ours"), results.get("baseline")
    if ours:
        lines += ["### Our pipeline (`python -m lib.run --force`, audit to PDF)", "",
                  f"- wall time **{ours['wall_seconds']:.0f} s** ({ours['wall_seconds'] / 60:.1f} min); "
                  f"peak resident memory **{ours['peak_rss_gib']:.2f} GiB**",
                  "- steps (wall time / peak memory of the step's kernel): " + step_figures(ours)]
        for model in MODELS:
            m = ours[model]
            lines.append(f"- {model}: training {m['training_seconds']:.0f} s, epochs {m['epochs_run']}, "
                         f"{images_per_second(m, ours['train_images']):.1f} training images/s; "
                         f"test accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}")
        lines += [cnn_throughput_line(ours, results.get("peak")), ""]
    if base:
        total = sum(base[m]["training_seconds"] + base[m]["test_seconds"] for m in ORIGINAL_MODELS)
        lines += ["### Original protocol (ImageDataGenerator.flow_from_dataframe, full forward pass every epoch)", "",
                  f"- wall time **{base['wall_seconds']:.0f} s** ({base['wall_seconds'] / 60:.1f} min; training and "
                  f"testing {total:.0f} s); peak resident memory **{base['peak_rss_gib']:.2f} GiB**"]
        for model in ORIGINAL_MODELS:
            m = base[model]
            lines.append(f"- {model}: training {m['training_seconds']:.0f} s, epochs {m['epochs']}, "
                         f"{images_per_second(m, base['train_images']):.1f} training images/s; "
                         f"test accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}")
        lines.append("")
    if results.get("peak"):
        rates = results["peak"]["matmul_gflops"]
        lines += ["### This machine's peak (4096 x 4096 matrix product)", "",
                  f"- float32 **{rates['float32']:.0f} GFLOP/s**, bfloat16 **{rates['bfloat16']:.0f} GFLOP/s** "
                  f"(nominal fp32 figure used elsewhere: {CPU_PEAK_GFLOPS:.0f} GFLOP/s)", ""]
    if ours and base:
        lines += ["### Ratios (original protocol / ours)", "",
                  f"- end to end: **{base['wall_seconds'] / ours['wall_seconds']:.2f}x** "
                  "(ours includes the audit, comparison, report and PDF; the baseline only trains and tests)"]
        for model in ORIGINAL_MODELS:
            lines.append(f"- {model} training: {base[model]['training_seconds'] / ours[model]['training_seconds']:.2f}x")
        lines.append("")
    plain, spread = results.get("plain"), results.get("spread")
    if plain and spread:
        cached = spread["seeds"][0]
        lines += ["### MobileNetV2 notebook: activation cache vs plain path (seed 42, same split)", "",
                  f"- plain (`activation_cache: false`): notebook {plain['notebook_seconds']:.0f} s, "
                  f"training {plain['training_seconds']:.0f} s; test accuracy {plain['accuracy']:.3f}, "
                  f"macro-F1 {plain['macro_f1']:.3f}; peak resident memory {plain['peak_rss_gib']:.2f} GiB",
                  f"- cached: notebook {cached['notebook_seconds']:.0f} s, training {cached['training_seconds']:.0f} s; "
                  f"test accuracy {cached['accuracy']:.3f}, macro-F1 {cached['macro_f1']:.3f}: "
                  f"**{plain['notebook_seconds'] / cached['notebook_seconds']:.1f}x faster**",
                  spread_line("cached path", spread["seeds"], "plain path", plain), ""]
    if results.get("precision"):
        lines += precision_lines(results["precision"])
    if results.get("memory"):
        lines += ["### Peak memory of the data path and the activation cache, by dataset size", "",
                  "| dataset | images | classes | peak RSS | activation cache | seconds |", "|---|---|---|---|---|---|"]
        for which, m in results["memory"].items():
            lines.append(f"| {which} | {m['images']:,} | {m['classes']} | {m['peak_rss_gib']:.2f} GiB | "
                         f"{m['cache']['cached_megabytes']:.0f} MB | {m['seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params/default.yaml", type=Path)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--from-run", type=Path, help="an earlier run whose data and split the parts use "
                        "when 'ours' is not among them")
    parser.add_argument("--write", type=Path, help="also append the summary to this Markdown file")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    params_file = (PROJECT_ROOT / args.params).resolve()

    if args.part:  # a child process: one part, its result as JSON
        work = args.json.parent
        start = time.perf_counter()
        if args.part == "ours":
            result = part_ours(params_file, work)
        elif args.part == "baseline":
            result = original_protocol(params_file, Path(args.rest[0]), work)
        elif args.part == "notebook":
            run_dir, seed, variant = Path(args.rest[0]), int(args.rest[1]), args.rest[2]
            model, changes = NOTEBOOK_VARIANTS[variant]
            result = _notebook_seconds(params_file, work, run_dir, f"{variant}-{seed}", seed, model, **changes)
        elif args.part == "peak":
            result = part_peak()
        elif args.part == "memory":
            result = part_memory(params_file, work, args.rest[0])
        result.setdefault("wall_seconds", time.perf_counter() - start)
        result["peak_rss_gib"] = peak_rss_gib()
        args.json.write_text(json.dumps(result, indent=2))
        return 0

    from lib.core.provenance import git_commit, machine_info

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="benchmark-") as folder:
        work = Path(folder)
        run_dir = run_paths(load_params(params_variant(params_file, work, "probe", **benchmark_run(work)))).root
        if "peak" in parts:
            results["peak"] = run_part("peak", "peak", params_file, work, [])
        if "ours" in parts:
            results["ours"] = run_part("ours", "ours", params_file, work, [])
        if NEEDS_SPLIT & set(parts):
            if "ours" not in parts:
                if not args.from_run:
                    parser.error(f"the {', '.join(sorted(NEEDS_SPLIT))} parts need the 'ours' part or --from-run")
                run_dir = (PROJECT_ROOT / args.from_run).resolve()
                results["split_from"] = str(args.from_run)
            split_manifest = split_of_earlier_run(run_dir, params_file)
        if "baseline" in parts:
            results["baseline"] = run_part("baseline", "baseline", params_file, work, [str(split_manifest)])
        if "plain" in parts:
            results["plain"] = run_part("notebook", "plain-42", params_file, work, [str(run_dir), "42", "plain"])
        if "spread" in parts:
            results["spread"] = {"seeds": [run_part("notebook", f"cached-{seed}", params_file, work,
                                                    [str(run_dir), str(seed), "cached"])
                                           for seed in (42, 43, 44)]}
        if "precision" in parts:
            results["precision"] = precision_part(params_file, work, run_dir, results.get("ours"))
        if "memory" in parts:
            results["memory"] = {which: run_part("memory", f"memory-{which}", params_file, work, [which])
                                 for which in ("default", "all")}
    text = summary_markdown(results, machine_info(), git_commit())
    print("\n" + text)
    print(json.dumps(results, indent=2, default=str))
    if args.write:
        with open(args.write, "a", encoding="utf-8") as handle:
            handle.write(text + "\n<details><summary>raw figures</summary>\n\n```json\n"
                         + json.dumps(results, indent=2, default=str) + "\n```\n</details>\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
