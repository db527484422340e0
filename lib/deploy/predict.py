"""Classify photos with a finished run's model: ./predict.sh (python -m lib.deploy.predict).

    ./predict.sh [--run reports/default] [--model MODEL] [--runtime keras|onnx] [--top-k K]
                 [--rank margin|entropy] [--csv FILE | --json FILE] IMAGE_OR_FOLDER...

Prints one row per image: the file, then its top-k labels with their probabilities (after the
post-processing the run chose). With ``--rank SCORE``, it prints the labelling queue instead: the photos
ordered most uncertain first by an acquisition score (`lib.training.acquisition`: ``margin``, the
default choice, or ``entropy``), with the score, the predicted label and its probability; ``--csv`` /
``--json`` then write the queue. Folders are searched recursively for image files (hidden files
left out); a file named on the command line is always tried. Images are read as the study read
them (EXIF upright, first frame, RGB: CMYK, 16-bit, palette, WebP and animated images included);
a file that cannot be read is named on stderr with the audit's reason, and the others go on.
Nothing is written except the ``--csv``/``--json`` file asked for; the model loads in Keras'
safe mode (``--runtime onnx``: the exported ONNX model, `lib.deploy.export`), and nothing is downloaded.

Exit status: 0 when every file was classified, 1 when some could not be read, 2 on a usage
error (no such run or model).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.paths import PROJECT_ROOT
from lib.core.study import DEFAULT_MODEL, MODELS
from lib.deploy.finished_run import (
    KerasClassifier,
    OnnxClassifier,
    RunError,
    RunModel,
    UnreadableImage,
    image_files,
    max_image_pixels,
    read_image,
    top_k,
)
from lib.training import acquisition


@dataclass
class Prediction:
    """One file's answer: its probabilities (post-processed), or why it could not be read."""

    file: str
    probabilities: np.ndarray | None = None
    error: str = ""
    top: list[tuple[str, float]] = field(default_factory=list)


def load_classifier(run_model: RunModel, runtime: str):
    """The run's model in Keras (float32) or its exported ONNX file in onnxruntime."""
    if runtime == "keras":
        return KerasClassifier(run_model)
    onnx_file = run_model.run_dir / "export" / run_model.name / "model.onnx"
    again = f"export the run (python -m lib.deploy.export --run {run_model.run_dir})"
    if not onnx_file.is_file():
        raise RunError(f"{onnx_file} is missing: {again}")
    # A re-run that retrained the model keeps the old export/ folder: never answer with a stale model.
    source = json.loads(onnx_file.with_name("model.json").read_text())["exported_from"]
    if source["sha256"] != run_model.model_sha256():
        raise RunError(f"{onnx_file} was exported from another {source['file']} than the run holds now: {again}")
    return OnnxClassifier(onnx_file, run_model.postprocessing)


def classify_files(files, run_model: RunModel, classifier, k: int, batch_size: int = 32) -> list[Prediction]:
    """Every file's top-k answer, in the order given; images are read and classified ``batch_size`` at a time."""
    size, max_pixels = run_model.input_size, max_image_pixels(run_model.run_dir)
    predictions = []
    for start in range(0, len(files), batch_size):
        batch, pixels = [], []
        for path in files[start : start + batch_size]:
            prediction = Prediction(str(path))
            try:
                pixels.append(read_image(path, size, max_pixels))
                batch.append(prediction)
            except UnreadableImage as error:
                prediction.error = str(error)
            predictions.append(prediction)
        if pixels:
            for prediction, probabilities in zip(batch, classifier.probabilities(np.stack(pixels), batch_size)):
                prediction.probabilities = probabilities
                prediction.top = top_k(probabilities, run_model.class_names, k)
    return predictions


def table_rows(predictions: list[Prediction], k: int) -> list[list[str]]:
    """The printed table, header first: file, then label and probability of each rank (classified files only)."""
    header = ["file"] + [column for rank in range(1, k + 1) for column in (f"label {rank}", f"p {rank}")]
    rows = [[p.file] + [cell for label, probability in p.top for cell in (label, f"{probability:.3f}")]
            for p in predictions if not p.error]
    return [header] + rows


def format_table(rows: list[list[str]]) -> str:
    """Columns two spaces apart, padded to their widest cell (probabilities right-aligned)."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(width) if rows[0][i].startswith("p ") else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def write_csv(predictions: list[Prediction], class_names: list[str], k: int, target: Path) -> None:
    """file, error, label/probability per rank, then every class's probability."""
    ranks = [column for rank in range(1, k + 1) for column in (f"label_{rank}", f"p_{rank}")]
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "error", *ranks, *(f"p_{name}" for name in class_names)])
        for p in predictions:
            top = [cell for label, probability in p.top for cell in (label, f"{probability:.6f}")]
            every = [] if p.error else [f"{value:.6f}" for value in p.probabilities]
            writer.writerow([p.file, p.error, *(top or [""] * len(ranks)), *(every or [""] * len(class_names))])


def write_json(predictions: list[Prediction], class_names: list[str], target: Path) -> None:
    """One object per file: file, error, top_k [{label, probability}], probabilities {class: p}."""
    records = [{"file": p.file, "error": p.error or None,
                "top_k": [{"label": label, "probability": probability} for label, probability in p.top],
                "probabilities": None if p.error else dict(zip(class_names, map(float, p.probabilities)))}
               for p in predictions]
    target.write_text(json.dumps(records, indent=2) + "\n")


def labelling_queue(predictions: list[Prediction], class_names: list[str], score: str) -> pd.DataFrame:
    """The classified files, most uncertain first by ``score`` (ties: in the order given): rank, file, the
    score's value, the predicted label and its probability."""
    classified = [p for p in predictions if not p.error]
    if not classified:
        return pd.DataFrame(columns=["rank", "file", score, "predicted", "probability"])
    probabilities = np.stack([p.probabilities for p in classified])
    order, values = acquisition.labelling_order(probabilities, score)
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "file": [classified[i].file for i in order],
                         score: values[order], "predicted": [class_names[i] for i in probabilities[order].argmax(axis=1)],
                         "probability": probabilities[order].max(axis=1)})


def rank_files(inputs, run_model: RunModel, classifier, score: str,
               batch_size: int = 32) -> tuple[pd.DataFrame, list[Prediction]]:
    """The labelling queue of the image files in ``inputs`` (files and folders, as `image_files` finds them), and
    the files that could not be read."""
    predictions = classify_files(image_files(inputs), run_model, classifier, 1, batch_size)
    return labelling_queue(predictions, run_model.class_names, score), [p for p in predictions if p.error]


def queue_rows(queue: pd.DataFrame) -> list[list[str]]:
    """The printed queue, header first."""
    score = queue.columns[2]
    return [["rank", "file", score, "predicted", "p"]] + [
        [str(row["rank"]), row["file"], f"{row[score]:.3f}", row["predicted"], f"{row['probability']:.3f}"]
        for _, row in queue.iterrows()]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="predict.sh", description="Classify photos with a finished run's model.")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--run", type=Path, default=PROJECT_ROOT / "reports" / "default",
                        help="a finished run (default: the project's reports/default)")
    parser.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL, help="default: %(default)s")
    parser.add_argument("--runtime", choices=("keras", "onnx"), default="keras",
                        help="keras: the saved model; onnx: its export (python -m lib.deploy.export); default: %(default)s")
    parser.add_argument("--top-k", type=int, default=3, help="labels per image (default: %(default)s)")
    parser.add_argument("--rank", choices=tuple(acquisition.SCORES), metavar="SCORE",
                        help="print the labelling queue instead: the photos most worth labelling first, by "
                             f"{' or '.join(acquisition.SCORES)} ({acquisition.DEFAULT_SCORE} is the usual choice: "
                             "lib/training/acquisition.py says why)")
    parser.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", type=Path, metavar="FILE", help="also write every answer to this CSV file")
    output.add_argument("--json", type=Path, metavar="FILE", help="also write every answer to this JSON file")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run_model = RunModel.open(args.run, args.model)
        classifier = load_classifier(run_model, args.runtime)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.rank:
        queue, unreadable = rank_files(args.inputs, run_model, classifier, args.rank, args.batch_size)
        report_unreadable(unreadable)
        print(format_table(queue_rows(queue)))
        if args.csv:
            queue.to_csv(args.csv, index=False, float_format="%.6f")
        if args.json:
            args.json.write_text(queue.to_json(orient="records", indent=2) + "\n")
        return 1 if unreadable else 0
    k = min(args.top_k, len(run_model.class_names))
    predictions = classify_files(image_files(args.inputs), run_model, classifier, k, args.batch_size)
    report_unreadable(predictions)
    print(format_table(table_rows(predictions, k)))
    if args.csv:
        write_csv(predictions, run_model.class_names, k, args.csv)
    if args.json:
        write_json(predictions, run_model.class_names, args.json)
    return 1 if any(p.error for p in predictions) else 0


def report_unreadable(predictions: list[Prediction]) -> None:
    for p in predictions:
        if p.error:
            print(f"unreadable: {p.file}: {p.error}", file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main())
