"""./predict.sh (lib.deploy.predict): every image format the audit accepts, unreadable files named, exact rows."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.core.paths import PROJECT_ROOT
from lib.data.audit import inspect_image
from lib.data.images import load_rgb
from lib.deploy import finished_run as deploy
from lib.deploy import predict

PROJECT = PROJECT_ROOT


def _photo(rng, size=(40, 56), colour=(200, 40, 40)) -> np.ndarray:
    pixels = np.empty((*size, 3), dtype=np.uint8)
    pixels[:] = colour
    pixels[size[0] // 3 :, : size[1] // 2] = rng.integers(0, 256, size=3)  # not symmetric: rotation matters
    return pixels


@pytest.fixture
def photos(tmp_path) -> Path:
    """One file of each format the audit reads, three that cannot be read, and a stray text file."""
    rng = np.random.default_rng(5)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    red, green, blue = _photo(rng), _photo(rng, colour=(40, 160, 40)), _photo(rng, colour=(40, 40, 200))
    Image.fromarray(red).save(folder / "plain.jpg", quality=95)
    rotated = Image.fromarray(np.rot90(green).copy())
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    rotated.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    Image.fromarray(blue).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    grey16 = (np.asarray(Image.fromarray(green).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(folder / "grey16.png")  # 16-bit greyscale (I;16)
    Image.fromarray(red).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(blue).save(folder / "photo.webp", quality=90)
    frames = [Image.fromarray(green), Image.fromarray(red)]
    frames[0].save(folder / "more" / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    (folder / "more" / "empty.jpg").write_bytes(b"")
    (folder / "not_an_image.png").write_text("a text file with an image's name\n")
    Image.fromarray(red).save(folder / "truncated.png")
    data = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not an image extension: never tried in a folder\n")
    return folder


READABLE = ["cmyk.jpg", "exif_rotated.jpg", "grey16.png", "more/animated.gif", "palette.png", "photo.webp",
            "plain.jpg"]
UNREADABLE = ["more/empty.jpg", "not_an_image.png", "truncated.png"]


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _expected_rows(run: Path, model_name: str, folder: Path, k: int, float32: bool = False) -> list[list[str]]:
    """The rows predict must print, computed without lib.deploy.predict: the saved model (or its float32 copy, which
    the ONNX export is) on `load_rgb`'s pixels."""
    run_model = deploy.RunModel.open(run, model_name)
    model = deploy.as_float32(run_model.keras_model) if float32 else run_model.keras_model
    names = sorted(READABLE, key=lambda n: (n.count("/"), n))  # os.walk order: files, then sub-folders
    # One batch, as predict's (a 16-bit model's last digits can depend on the batch's kernels).
    pixels = np.stack([np.asarray(load_rgb(str(folder / name), run_model.input_size)) for name in names])
    rows = []
    for name, probabilities in zip(names, run_model.postprocessing.apply(model.predict(pixels.astype("float32"),
                                                                                       verbose=0))):
        order = np.argsort(-probabilities, kind="stable")[:k]
        rows.append([str(folder / name)] + [c for i in order
                                            for c in (run_model.class_names[i], f"{probabilities[i]:.3f}")])
    return rows


def _printed_rows(text: str) -> list[list[str]]:
    return [re.split(r" {2,}", line.strip()) for line in text.strip().splitlines()]


@pytest.mark.parametrize("model_name", ["cnn", "mobilenetv2"])
def test_every_format_is_classified_and_every_unreadable_file_named(finished_run, photos, model_name, capsys):
    before = _digest(photos)
    status = predict.main(["--run", str(finished_run), "--model", model_name, "--top-k", "2", str(photos)])
    out, err = capsys.readouterr()
    rows = _printed_rows(out)
    assert rows[0] == ["file", "label 1", "p 1", "label 2", "p 2"]
    assert rows[1:] == _expected_rows(finished_run, model_name, photos, 2)
    lines = err.splitlines()
    assert lines[0] == (f"unreadable: {photos / 'not_an_image.png'}: not a readable image (UnidentifiedImageError: "
                        "cannot identify image file 'not_an_image.png')")
    truncated = inspect_image(str(photos / "truncated.png"), 10**8)["error"]
    assert lines[1] == f"unreadable: {photos / 'truncated.png'}: {truncated}"
    assert lines[1].startswith(f"unreadable: {photos / 'truncated.png'}: not a readable image (")
    assert lines[2:] == [f"unreadable: {photos / 'more/empty.jpg'}: empty file (0 bytes)"]
    assert "notes.txt" not in out + err
    assert status == 1  # some files could not be read
    assert _digest(photos) == before  # nothing written next to the images


def test_rotation_and_conversion_reach_the_model(finished_run, photos):
    """The EXIF-rotated photo is turned upright and the CMYK one converted, as the study reads them."""
    size = deploy.RunModel.open(finished_run, "cnn").input_size
    upright = deploy.read_image(photos / "exif_rotated.jpg", size, 10**8)
    assert upright.shape == (*size, 3) and upright.dtype == np.uint8
    np.testing.assert_array_equal(upright, np.asarray(load_rgb(str(photos / "exif_rotated.jpg"), size)))
    sideways = np.asarray(Image.open(photos / "exif_rotated.jpg").convert("RGB").resize(size[::-1]))
    assert np.abs(upright.astype(int) - sideways).mean() > 10
    assert deploy.read_image(photos / "cmyk.jpg", size, 10**8).shape == (*size, 3)


def test_csv_and_json_hold_every_file(finished_run, photos, tmp_path, capsys):
    files = [str(photos / "plain.jpg"), str(photos / "more" / "empty.jpg")]
    predict.main(["--run", str(finished_run), "--model", "cnn", "--csv", str(tmp_path / "out.csv"), *files])
    predict.main(["--run", str(finished_run), "--model", "cnn", "--top-k", "1", "--json", str(tmp_path / "out.json"),
                  *files])
    capsys.readouterr()
    import pandas as pd

    table = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(table.columns) == ["file", "error", "label_1", "p_1", "label_2", "p_2", "label_3", "p_3",
                                   "p_alpha", "p_beta", "p_gamma"]
    assert table["file"].tolist() == files and table.loc[1, "error"] == "empty file (0 bytes)"
    assert table.loc[0, ["p_alpha", "p_beta", "p_gamma"]].astype(float).sum() == pytest.approx(1, abs=1e-5)
    records = json.loads((tmp_path / "out.json").read_text())
    assert [r["file"] for r in records] == files
    assert records[0]["top_k"][0]["label"] == table.loc[0, "label_1"] and len(records[0]["top_k"]) == 1
    assert records[1] == {"file": files[1], "error": "empty file (0 bytes)", "top_k": [], "probabilities": None}


def test_the_onnx_runtime_prints_the_float32_models_rows(finished_run, photos, capsys):
    from lib.deploy import export

    export.export_model(finished_run, "cnn", check_images=4)
    predict.main(["--run", str(finished_run), "--model", "cnn", "--runtime", "onnx", str(photos)])
    assert _printed_rows(capsys.readouterr().out)[1:] == _expected_rows(finished_run, "cnn", photos, 3, float32=True)


def test_a_stale_onnx_export_is_refused(finished_run, tmp_path, photos, capsys):
    import shutil

    from lib.deploy import export

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    export.export_model(run, "cnn", check_images=2)
    described = export.export_dir(run, "cnn") / "model.json"
    values = json.loads(described.read_text())
    assert values["exported_from"]["sha256"] == deploy.RunModel.open(run, "cnn").model_sha256()
    values["exported_from"]["sha256"] = "0" * 64  # as if the run had retrained the model since
    described.write_text(json.dumps(values))
    assert predict.main(["--run", str(run), "--model", "cnn", "--runtime", "onnx", str(photos / "plain.jpg")]) == 2
    assert "was exported from another rounds/seed-7/cnn/model.keras than the run holds now" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_offline_in_a_fresh_process_and_names_a_missing_run(finished_run, photos, tmp_path):
    """No Keras cache (no ImageNet weights) and no network: predict needs only the run."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "empty_keras_home"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "lib.deploy.predict", "--run", str(finished_run), str(photos / "plain.jpg")]
    done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert _printed_rows(done.stdout)[1][0] == str(photos / "plain.jpg")
    assert not any(workdir.iterdir())  # nothing written where it ran
    missing = subprocess.run([*command[:4], str(tmp_path / "nope"), str(photos)], env=env, capture_output=True,
                             text=True, timeout=300, check=False)
    assert missing.returncode == 2 and f"{tmp_path / 'nope'} is not a finished run" in missing.stderr


def test_the_throughput_benchmark_times_predict_and_checks_it_against_the_run(finished_run):
    import importlib.util

    script = PROJECT / "benchmarks" / "predict_throughput.py"
    spec = importlib.util.spec_from_file_location("predict_throughput", script)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    row = benchmark.measure(finished_run, "cnn", "keras", limit=10)
    assert row["images"] == 10 and row["images_per_second"] > 0
    assert row["agree"] == 10  # the saved model, in its own precision, gives the labels the run wrote
    text = benchmark.markdown(finished_run, [row], {})
    assert f"| cnn | keras | 10 | {row['images_per_second']:.1f} | 10 / 10 |" in text


@pytest.mark.parametrize("score", ["margin", "entropy"])
def test_the_labelling_queue_puts_the_least_certain_photo_first(finished_run, photos, tmp_path, score, capsys):
    status = predict.main(["--run", str(finished_run), "--model", "cnn", "--rank", score, "--csv",
                           str(tmp_path / "queue.csv"), str(photos)])
    out, err = capsys.readouterr()
    assert status == 1 and err.count("unreadable: ") == len(UNREADABLE)
    import pandas as pd

    from lib.training import acquisition

    queue = pd.read_csv(tmp_path / "queue.csv")
    assert list(queue.columns) == ["rank", "file", score, "predicted", "probability"]
    assert queue["rank"].tolist() == list(range(1, len(READABLE) + 1))
    assert sorted(queue["file"]) == sorted(str(photos / name) for name in READABLE)
    # The scores of the probabilities predict reports for the same files, most uncertain first.
    run_model = deploy.RunModel.open(finished_run, "cnn")
    classified = predict.classify_files(deploy.image_files([photos]), run_model, deploy.KerasClassifier(run_model), 1)
    readable = [p for p in classified if not p.error]
    order, values = acquisition.labelling_order(np.stack([p.probabilities for p in readable]), score)
    assert queue["file"].tolist() == [readable[i].file for i in order]
    np.testing.assert_allclose(queue[score], values[order], atol=1e-6)
    assert queue["predicted"].tolist() == [readable[i].top[0][0] for i in order]
    assert _printed_rows(out)[0] == ["rank", "file", score, "predicted", "p"]
    assert [row[1] for row in _printed_rows(out)[1:]] == queue["file"].tolist()
