"""Drive the web app (lib/deploy/app.py) in headless Chromium: upload photos, read the answers, take a screenshot.

    .venv/bin/python tools/app_browser.py --run reports/default --screenshot docs/app.png PHOTO [PHOTO...]

Starts the app on a free localhost port, uploads each photo in Debian's Chromium through Playwright
(`executable_path`: Playwright's own browser download is not used), prints each model's predicted label
and the time from upload to answer, and saves a screenshot (downscaled to a small PNG). The end-to-end
test (tests/deploy/test_app.py) uses the same functions.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Headless, as root in a container, and without the background connections a closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
MODELS = ("cnn", "mobilenetv2")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost: never through a proxy
    try:
        with opener.open(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


@contextmanager
def serving(run: Path, port: int | None = None, timeout: float = 180, log: Path | None = None):
    """The app serving ``run`` on 127.0.0.1 (``python -m lib.deploy.app``, as ./app.sh starts it); yields its URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log or os.devnull, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "lib.deploy.app", "--run", str(run), "--port", str(port)],
                                  cwd=PROJECT, stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if server.poll() is not None:
                raise RuntimeError(f"the app stopped with status {server.returncode} before serving" +
                                   (f"; its output is in {log}" if log else ""))
            if time.monotonic() > deadline:
                raise TimeoutError(f"the app did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def missing_browser() -> str:
    """Why a browser test cannot run here ("" when it can): no Chromium, or no Playwright."""
    import importlib.util

    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (it is in requirements.lock)"
    return ""


@contextmanager
def chromium_page(width: int = 1280, height: int = 900):
    """A page in headless Debian Chromium, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def open_app(page, url: str, timeout_s: float = 180) -> None:
    """Load the app and wait until its models are loaded (the uploader appears after them)."""
    page.goto(url)
    page.wait_for_selector('input[type="file"]', state="attached", timeout=timeout_s * 1000)


def upload_image(page, photo: Path, uploaded_before: int = 0, timeout_s: float = 180) -> tuple[dict, float]:
    """Upload one photo; returns ({model: predicted label shown}, seconds from upload to both answers with their
    Grad-CAM overlays on the page)."""
    start = time.perf_counter()
    page.set_input_files('input[type="file"]', str(photo))
    labels = {}
    for model in MODELS:
        answer = page.locator(f'span.prediction[data-model="{model}"]').nth(uploaded_before)
        answer.wait_for(timeout=timeout_s * 1000)
        labels[model] = answer.inner_text().strip()
    overlays = page.locator('[data-testid="stImage"]')
    overlays.nth(len(MODELS) * (uploaded_before + 1) - 1).wait_for(timeout=timeout_s * 1000)
    return labels, time.perf_counter() - start


def upload_non_image(page, file: Path, timeout_s: float = 60) -> str:
    """Upload a file that is no image; returns the message the app shows for it."""
    page.set_input_files('input[type="file"]', str(file))
    message = page.get_by_text(f"{file.name} is not an image the models can read")
    message.wait_for(timeout=timeout_s * 1000)
    return message.inner_text()


def save_small_png(png: bytes, target: Path, width: int = 900) -> None:
    """A screenshot downscaled to ``width`` pixels and reduced to 256 colours: small enough for a README."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(256).save(target, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=PROJECT / "reports" / "default")
    parser.add_argument("--screenshot", type=Path, help="save a small PNG of the page here")
    parser.add_argument("--window", default="1280x1000", help="browser window WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("photos", nargs="+", type=Path)
    args = parser.parse_args(argv)
    width, height = map(int, args.window.split("x"))
    with serving(args.run.resolve()) as url, chromium_page(width, height) as page:
        open_app(page, url)
        for number, photo in enumerate(args.photos):
            labels, seconds = upload_image(page, photo.resolve(), number)
            print(f"{photo}: {labels}; upload to answer {seconds:.2f} s")
        if args.screenshot:
            page.wait_for_timeout(500)
            save_small_png(page.screenshot(full_page=True), args.screenshot)
            print(f"screenshot: {args.screenshot} ({args.screenshot.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
