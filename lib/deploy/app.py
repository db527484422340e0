"""A small web app on a finished run: upload photos, see both models' answers side by side.

    ./app.sh [--run reports/default] [--port 8501] [--address 127.0.0.1] [--top-k 3]
    (python -m lib.deploy.app with the same options)

For each photo, each model of the run's first round shows its top-k labels and probabilities (after
the run's post-processing), a Grad-CAM overlay of the predicted class (`lib.analysis.explain.grad_cam`, the
report's saliency function) and its test precision, recall and F1 for that class, i.e. how far to
trust the answer. A file that is not a readable image gets a message with the audit's reason.
"Which photos to label next" ranks a folder of unlabelled photos on this machine by how unsure a model
is of each, as ``./predict.sh --rank`` does (`lib.deploy.predict.rank_files`), with the queue as a CSV download.
Another finished run under the same reports folder can be picked in the sidebar.

The app is a Streamlit page: ``python -m lib.deploy.app`` starts Streamlit on ``app/page.py`` (`launch`),
listening on 127.0.0.1 unless ``--address`` says otherwise, with usage statistics off (nothing leaves
the machine); that page calls `page` here.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from lib.core.paths import PROJECT_ROOT
from lib.core.study import MODELS
from lib.deploy.finished_run import (
    KerasClassifier,
    RunError,
    RunModel,
    UnreadableImage,
    finished_runs,
    max_image_pixels,
    read_image,
    top_k,
)
from lib.deploy.predict import rank_files
from lib.training import acquisition

DEFAULT_RUN = PROJECT_ROOT / "reports" / "default"
PAGE = PROJECT_ROOT / "app" / "page.py"  # the file Streamlit runs: it calls `page`


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.sh", description="A web app on a finished run's models.")
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="the run shown first (default: reports/default)")
    parser.add_argument("--top-k", type=int, default=3, help="labels shown per model (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8501, help="default: %(default)s")
    parser.add_argument("--address", default="127.0.0.1",
                        help="default: %(default)s (this machine only); 0.0.0.0 opens it to the network")
    return parser.parse_args(argv)


def launch(argv) -> None:
    """Become Streamlit serving the page with the app's options (exec: stopping this process stops the server)."""
    args = parse_args(argv)
    command = [
        sys.executable, "-m", "streamlit", "run", str(PAGE),
        "--server.address", args.address, "--server.port", str(args.port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
        "--", "--run", str(args.run.resolve()), "--top-k", str(args.top_k),
    ]
    print(f"Serving {args.run} on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
    os.execv(sys.executable, command)


# ---------------------------------------------------------------------------------------------
# What the page shows, computed without Streamlit
# ---------------------------------------------------------------------------------------------


def answer(run_model: RunModel, classifier: KerasClassifier, pixels: np.ndarray, k: int) -> dict:
    """One model's answer for one photo: top-k, Grad-CAM overlay of the predicted class, its test metrics."""
    # Keras and its backend load with Grad-CAM, at the first answer: the page and --help come up without them.
    from lib.analysis.explain import grad_cam, overlay

    probabilities = classifier.probabilities(pixels[None])[0]
    top = top_k(probabilities, run_model.class_names, k)
    predicted = run_model.class_names.index(top[0][0])
    heat = grad_cam(classifier.model, pixels, class_indices=predicted)
    return {"top": top, "label": top[0][0], "overlay": overlay(pixels, heat),
            "class_metrics": run_model.class_metrics(top[0][0]), "metrics": run_model.metrics}


def read_upload(name: str, data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """An uploaded file's pixels as the models take them (`lib.deploy.finished_run.read_image`), read from a private
    temporary copy: nothing is written anywhere else. Raises `UnreadableImage`."""
    with tempfile.TemporaryDirectory(prefix="upload-") as folder:
        path = Path(folder) / (Path(name).name or "upload")
        path.write_bytes(data)
        return read_image(path, size, max_pixels)


# ---------------------------------------------------------------------------------------------
# The Streamlit page
# ---------------------------------------------------------------------------------------------


def page(args: argparse.Namespace) -> None:
    import streamlit as st

    st.set_page_config(page_title="Product photo classifier", layout="wide")
    run_dir = choose_run(st, args.run)
    try:
        models = load_models(str(run_dir))
    except RunError as error:  # not a run at all (no params.json, no first round)
        st.error(str(error))
        return
    if not models:
        st.error(f"{run_dir} has no finished model: run ./run_all.sh first, or pick another run.")
        return
    first = next(iter(models.values()))[0]
    st.title("Product photo classifier")
    st.caption(f"Run `{run_dir.name}`, round {first.paths.root.parent.name}; classes: "
               + ", ".join(first.class_names) + ". Test metrics are those of the run's test split.")
    uploads = st.file_uploader("Photos (JPEG, PNG, WebP, GIF, BMP, TIFF)", accept_multiple_files=True)
    for upload in uploads or []:
        show_upload(st, upload.name, upload.getvalue(), models, run_dir, args.top_k)
    show_labelling_queue(st, models)


def choose_run(st, given: Path) -> Path:
    """The run picked in the sidebar among the finished runs beside ``given`` (``given`` first)."""
    given = given.resolve()
    runs = [given] + [run.resolve() for run in finished_runs(given.parent) if run.resolve() != given]
    return st.sidebar.selectbox("Finished run", runs, format_func=lambda run: run.name)


def load_models(run_dir: str) -> dict:
    """{model name: (RunModel, KerasClassifier)} for each finished model of the run, loaded once per run."""
    import streamlit as st

    @st.cache_resource(show_spinner="Loading the run's models...")
    def cached(run_dir: str) -> dict:
        loaded = {}
        for name in MODELS:
            if (run_model := RunModel(Path(run_dir), name)).paths.metrics.is_file():
                loaded[name] = (run_model, KerasClassifier(run_model))
        return loaded

    return cached(run_dir)


def show_upload(st, name: str, data: bytes, models: dict, run_dir: Path, k: int) -> None:
    """One uploaded file: both models' answers side by side, or why it cannot be read."""
    st.subheader(name)
    first = next(iter(models.values()))[0]
    try:
        pixels = read_upload(name, data, first.input_size, max_image_pixels(run_dir))
    except UnreadableImage as error:
        st.error(f"{name} is not an image the models can read: {error}")
        return
    for column, (model_name, (run_model, classifier)) in zip(st.columns(len(models)), models.items()):
        with column:
            show_answer(st, model_name, answer(run_model, classifier, pixels, k))


def show_labelling_queue(st, models: dict) -> None:
    """A folder's photos, the most worth labelling first (the queue of ``./predict.sh --rank``), and its CSV."""
    with st.expander("Which photos to label next"):
        folder = st.text_input("A folder of unlabelled photos on this machine")
        model_name = st.selectbox("Model", list(models), format_func=lambda name: MODELS[name].title)
        scores = list(acquisition.SCORES)
        score = st.selectbox("Uncertainty score", scores, index=scores.index(acquisition.DEFAULT_SCORE),
                             help="margin: top probability minus the second, smallest first; "
                                  "entropy: highest first (lib/training/acquisition.py)")
        if not folder:
            return
        if not Path(folder).is_dir():
            st.error(f"{folder} is not a folder on this machine.")
            return
        run_model, classifier = models[model_name]
        queue, unreadable = rank_files([folder], run_model, classifier, score)
        for p in unreadable:
            st.warning(f"{p.file} is not an image the models can read: {p.error}")
        st.dataframe(queue, hide_index=True)
        st.download_button("Download the queue (CSV)", queue.to_csv(index=False, float_format="%.6f"),
                           file_name="labelling_queue.csv", mime="text/csv")


def show_answer(st, model_name: str, result: dict) -> None:
    label, probability = result["top"][0]
    st.markdown(f"**{MODELS[model_name].title}**: "
                f'<span class="prediction" data-model="{model_name}">{html.escape(label)}</span> '
                f"({probability:.1%})", unsafe_allow_html=True)
    st.table({"label": [lab for lab, _ in result["top"]], "probability": [f"{p:.3f}" for _, p in result["top"]]})
    cls, metrics = result["class_metrics"], result["metrics"]
    st.caption(f"How far to trust '{label}' from this model, on the run's test split: precision "
               f"{cls['precision']:.2f} (its '{label}' answers that were right), recall {cls['recall']:.2f} (the "
               f"'{label}' images it found), F1 {cls['f1']:.2f}, over {cls['support']} test images of the class; "
               f"all classes: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}.")
    st.image(result["overlay"], caption=f"Grad-CAM: where the evidence for '{label}' lies", width=300)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    launch(sys.argv[1:])
