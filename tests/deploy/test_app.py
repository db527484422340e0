"""The web app, end to end in a real browser (headless Debian Chromium driven by Playwright), and its parts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.core.paths import PROJECT_ROOT
from lib.deploy import app
from lib.deploy import finished_run as deploy

PROJECT = PROJECT_ROOT
sys.path.insert(0, str(PROJECT / "tools"))
import app_browser

pytestmark = pytest.mark.slow  # every test here exports or serves a trained model


def _photo(tmp_path: Path) -> Path:
    """A green photo (the 'beta' colour of the finished run) with a block in one corner."""
    pixels = np.full((60, 80, 3), (40, 160, 40), dtype=np.uint8)
    pixels[35:, :30] = (230, 230, 230)
    Image.fromarray(pixels).save(tmp_path / "shelf photo.jpg", quality=95)
    return tmp_path / "shelf photo.jpg"


@pytest.mark.slow
@pytest.mark.skipif(bool(app_browser.missing_browser()),
                    reason=app_browser.missing_browser() or "browser present")
def test_upload_in_a_real_browser_shows_both_models_predictions(finished_run, tmp_path):
    photo, not_an_image = _photo(tmp_path), tmp_path / "notes.txt"
    not_an_image.write_text("not a photo\n")
    expected = {}
    for name in app_browser.MODELS:
        run_model = deploy.RunModel.open(finished_run, name)
        pixels = deploy.read_image(photo, run_model.input_size, 10**8)
        expected[name] = deploy.top_k(deploy.KerasClassifier(run_model).probabilities(pixels[None])[0],
                                      run_model.class_names, 1)[0][0]

    with app_browser.serving(finished_run, log=tmp_path / "app.log") as url, app_browser.chromium_page() as page:
        assert url.startswith("http://127.0.0.1:")
        app_browser.open_app(page, url)
        labels, seconds = app_browser.upload_image(page, photo)
        print(f"upload to answer: {seconds:.2f} s; labels {labels}")
        assert labels == expected
        body = page.inner_text("body")
        assert "shelf photo.jpg" in body and "Grad-CAM" in body
        metrics = deploy.RunModel.open(finished_run, "cnn").class_metrics(expected["cnn"])
        assert (f"How far to trust '{expected['cnn']}' from this model, on the run's test split: precision "
                f"{metrics['precision']:.2f}") in body
        assert len(page.locator('[data-testid="stImage"] img').all()) == 2  # one overlay per model
        message = app_browser.upload_non_image(page, not_an_image)
        assert "notes.txt is not an image the models can read: not a readable image" in message
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_the_app_listens_on_localhost_only_by_default():
    args = app.parse_args([])
    assert args.address == "127.0.0.1" and args.run == app.DEFAULT_RUN and args.top_k == 3


def test_answer_gives_top_k_overlay_and_the_predicted_class_test_metrics(finished_run):
    run_model = deploy.RunModel.open(finished_run, "cnn")
    classifier = deploy.KerasClassifier(run_model)
    pixels = np.full((*run_model.input_size, 3), (200, 40, 40), dtype=np.uint8)
    result = app.answer(run_model, classifier, pixels, k=2)
    probabilities = classifier.probabilities(pixels[None])[0]
    assert result["label"] == run_model.class_names[int(probabilities.argmax())]
    assert [label for label, _ in result["top"]] == [run_model.class_names[i] for i in np.argsort(-probabilities)[:2]]
    assert result["overlay"].shape == (*run_model.input_size, 3) and result["overlay"].dtype == np.uint8
    assert result["class_metrics"] == run_model.metrics["per_class"][result["label"]]


def test_an_upload_that_is_no_image_is_refused_with_the_reason(tmp_path):
    with pytest.raises(deploy.UnreadableImage, match=r"not a readable image .*'notes.txt'"):
        app.read_upload("notes.txt", b"hello", (32, 32), 10**8)
    with pytest.raises(deploy.UnreadableImage, match=r"empty file \(0 bytes\)"):
        app.read_upload("../../empty.jpg", b"", (32, 32), 10**8)
    assert not (tmp_path.parent / "empty.jpg").exists()


def test_a_folder_that_is_no_finished_run_gets_a_message(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["page.py", "--run", str(tmp_path / "no_run")])
    page = AppTest.from_file(str(app.PAGE), default_timeout=120).run()
    assert not page.exception
    assert [message.value for message in page.error] == [
        (f"{tmp_path / 'no_run'} is not a finished run: it has no params.json and no "
         "rounds/<round>/<model>/methods.csv (run ./run_all.sh first)")]
