"""Reading an image file as the models see it: upright RGB, the first frame, optionally resized.

One place for every reader of image files (the audit, the decoded pixels the models train on,
the figures), so that they all see the same pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps


@contextlib.contextmanager
def truncated_files_refused() -> Iterator[None]:
    """PIL refuses a truncated file while the block runs, as it does by default. The switch is process-wide
    and another library may turn it on (WeasyPrint does when imported, for the report's PDF), which would
    let a half-written photo through the audit."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def to_rgb(image: Image.Image) -> Image.Image:
    """An upright RGB copy: EXIF orientation applied, palette/alpha/CMYK/16-bit converted.

    Transparent pixels become white, as a product photo's background would be.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping to white.
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray(np.uint8(np.round(array * (255.0 / peak))))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def load_rgb(path: str, size: tuple[int, int] | None = None) -> Image.Image:
    """Open an image file as upright RGB (first frame of an animation), optionally resized."""
    with Image.open(path) as image:
        image.seek(0)
        rgb = to_rgb(image)
    return rgb if size is None else rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
