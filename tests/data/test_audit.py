import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from helpers import random_image
from PIL import Image, ImageEnhance

from lib.data import audit, sources
from lib.data.images import load_rgb
from lib.report import data_prose

MAX_PIXELS = 10_000_000


def _png_declaring(path, width, height):
    """A tiny PNG file whose header declares a huge image (a decompression bomb's signature)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_a_good_image_is_described(tmp_path, rng):
    path = tmp_path / "ok.jpg"
    random_image(rng, size=(30, 50)).save(path)
    found = audit.inspect_image(str(path), MAX_PIXELS)
    assert found["error"] == ""
    assert (found["width"], found["height"], found["mode"], found["format"]) == (50, 30, "RGB", "JPEG")
    assert len(found["sha256"]) == 64 and len(found["phash"]) == 16


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p, rng: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p, rng: p.write_text("hello, I am text"), "not a readable image (UnidentifiedImageError"),
        (lambda p, rng: (random_image(rng, (64, 64)).save(p), p.write_bytes(p.read_bytes()[:300])),
         "not a readable image (OSError"),
        (lambda p, rng: _png_declaring(p, 50_000, 50_000), "refused as a possible decompression bomb"),
    ],
    ids=["empty", "text", "truncated", "bomb"],
)
def test_unusable_files_get_a_reason(tmp_path, rng, make, reason):
    path = tmp_path / "bad.jpg"
    make(path, rng)
    assert reason in audit.inspect_image(str(path), MAX_PIXELS)["error"]


def test_a_dangling_link_is_unreadable_not_fatal(tmp_path):
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "missing.jpg")
    assert audit.inspect_image(str(link), MAX_PIXELS)["error"].startswith("cannot read file")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_unusual_modes_become_rgb(tmp_path, rng, mode):
    source = random_image(rng, (20, 24))
    converted = source.convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(source.convert("L"), dtype=np.uint16) * 256
    )
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    converted.save(path)
    rgb = load_rgb(str(path))
    assert rgb.mode == "RGB" and rgb.size == (24, 20)
    if mode == "I;16":  # scaled to 8 bits, not clipped to white
        assert 0 < np.asarray(rgb).mean() < 250


def test_exif_rotated_photos_are_upright(tmp_path, rng):
    image = random_image(rng, (20, 40))  # 40 wide, 20 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_rgb(str(path)).size == (20, 40)


def test_inspect_records_combines_scan_skips_and_decode_errors(image_folder):
    (image_folder / "beta" / "broken.jpg").write_text("no")
    (image_folder / "beta" / "readme.md").write_text("no")
    records = sources.scan_class_folders(image_folder)
    table = audit.inspect_records(records, MAX_PIXELS, workers=2)
    assert len(table) == len(records)
    bad = table.loc[~table["usable"]].set_index("relpath")["reason"]
    assert set(bad.index) == {"beta/broken.jpg", "beta/readme.md"}
    assert bad["beta/readme.md"] == "not an image file extension (.md)"
    assert bad["beta/broken.jpg"].startswith("not a readable image")
    assert table["usable"].sum() == 30


@pytest.fixture
def duplicated_folder(image_folder):
    original = image_folder / "alpha" / "img_000.jpg"
    (image_folder / "alpha" / "copy.jpg").write_bytes(original.read_bytes())
    ImageEnhance.Brightness(Image.open(image_folder / "beta" / "img_000.jpg")).enhance(1.05).save(
        image_folder / "beta" / "brighter.jpg", quality=95
    )
    return image_folder


def test_duplicates_are_found_and_cross_split_pairs_flagged(duplicated_folder):
    table = audit.inspect_records(sources.scan_class_folders(duplicated_folder), MAX_PIXELS)
    by_path = {rel: i for i, rel in enumerate(table["relpath"])}
    exact = audit.exact_duplicate_pairs(table)
    assert {(table["relpath"][a], table["relpath"][b]) for a, b in zip(exact["a"], exact["b"])} == {
        ("alpha/copy.jpg", "alpha/img_000.jpg")
    }
    near = audit.near_duplicate_pairs(table, max_distance=4)
    near_pairs = {frozenset((a, b)) for a, b in zip(near["a"], near["b"])}
    assert frozenset((by_path["beta/brighter.jpg"], by_path["beta/img_000.jpg"])) in near_pairs

    table["split"] = "train"
    table.loc[by_path["beta/brighter.jpg"], "split"] = "test"
    pairs = audit.describe_pairs(pd.concat([exact, near], ignore_index=True), table)
    crossing = pairs[pairs["cross_split"]]
    assert set(crossing["relpath_a"]) | set(crossing["relpath_b"]) >= {"beta/brighter.jpg"}
    summary = audit.leak_summary(pairs)
    assert summary.loc[summary["kind"] == "near", "splits"].tolist() == ["test / train"]
    assert audit.summarize(table.assign(usable=True), pairs)["test_images_with_a_train_duplicate"] == 1


def test_class_balance_numbers(image_folder):
    table = audit.inspect_records(sources.scan_class_folders(image_folder), MAX_PIXELS)
    counts = audit.class_counts(table)
    assert counts.to_dict() == {"alpha": 12, "beta": 10, "gamma": 8}
    assert audit.imbalance_ratio(counts) == 1.5


def test_findings_escape_class_names():
    summary = {
        "images_usable": 3, "files_excluded": 0, "classes": {"<b>bold</b>": 2, "plain": 1},
        "imbalance_ratio": 2.0, "exact_duplicate_pairs": 0, "exact_duplicate_pairs_across_splits": 0,
        "near_duplicate_pairs": 0, "near_duplicate_pairs_across_splits": 0,
        "test_images_with_a_train_duplicate": 0, "split_sizes": {"test": 1}, "feature_duplicate_pairs": 0,
        "feature_duplicate_pairs_across_splits": 0, "group_near_duplicates": True,
        "thresholds": {"phash_max_distance": 8, "feature_min_similarity": 0.9},
        "max_group_size": 50, "near_duplicate_groups": 3, "largest_group": 1, "label_conflicts": 0,
        "extreme_images": 0, "cross_class_pairs": 0,
    }
    text = data_prose.audit_findings(summary)
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>" not in text


def test_a_file_link_loop_is_unreadable_not_fatal(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    assert audit.inspect_image(str(loop), MAX_PIXELS)["error"].startswith("cannot read file")


def test_palette_png_with_transparency_becomes_rgb_on_white(tmp_path):
    image = Image.new("P", (10, 10), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 5, 10))
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)  # colour 0 (red) is transparent
    rgb = np.asarray(load_rgb(str(path)))
    assert tuple(rgb[0, 0]) == (0, 0, 255) and tuple(rgb[0, 9]) == (255, 255, 255)
    assert audit.inspect_image(str(path), MAX_PIXELS)["mode"] == "P"


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert audit.inspect_image(str(path), MAX_PIXELS)["error"] == ""
    red, green, blue = np.asarray(load_rgb(str(path))).reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 50 and blue < 50


def test_scan_skips_are_listed_with_their_reason_and_never_opened(tmp_path):
    root = tmp_path / "data"
    (root / "empty").mkdir(parents=True)
    (root / "full").mkdir()
    random_image(np.random.default_rng(0)).save(root / "full" / "a.png")
    table = audit.inspect_records(sources.scan_class_folders(root), MAX_PIXELS)
    empty = table.set_index("relpath").loc["empty/"]
    assert not empty["usable"] and empty["reason"].startswith("class folder without any image file")
    assert empty["sha256"] == "" and table["usable"].sum() == 1


def test_feature_pairs_groups_and_leaks_by_round():
    images = pd.DataFrame({"label": ["a"] * 4 + ["b"] * 2, "usable": [True, True, False, True, True, True]})
    features = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.0, 0.99], [0.7, 0.7]])  # usable rows only
    pairs = audit.feature_duplicate_pairs(images, features, 0.95)
    assert pairs[["a", "b", "kind"]].values.tolist() == [[0, 1, "feature"], [3, 4, "feature"]]
    assert pairs["distance"].between(0.95, 1.0).all()
    with pytest.raises(ValueError, match="5 usable images"):
        audit.feature_duplicate_pairs(images, features[:4], 0.95)
    group = audit.duplicate_groups(images, pairs)
    # rows 3 and 4 are a pair under different labels: groups form within a class only
    assert group[0] == group[1] and group[3] != group[4] and len(set(group)) == 5

    crossing = pd.Series(["train", "test", "", "test", "train", "val"])
    together = pd.Series(["train", "train", "", "test", "test", "val"])
    exact_with_unusable = pd.DataFrame({"a": [1], "b": [2], "distance": [0], "kind": ["exact"]})
    leaks = audit.leaks_by_round(pd.concat([pairs, exact_with_unusable], ignore_index=True),
                                 {"seed-1": {"plain": crossing, "used": together}})
    assert leaks.loc["seed-1"].to_dict() == {
        "pairs across splits (plain)": 2, "test images with a training near-duplicate (plain)": 2,
        "pairs across splits (used)": 0, "test images with a training near-duplicate (used)": 0,
    }


def test_a_truncated_file_is_refused_even_after_weasyprint_turned_pil_lenient(tmp_path):
    """WeasyPrint's import sets PIL's process-wide LOAD_TRUNCATED_IMAGES (the report's PDF imports it)."""
    from PIL import ImageFile

    path = tmp_path / "half.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        assert audit.inspect_image(str(path), 10**8)["error"].startswith("not a readable image")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the switch is restored for whoever set it"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def test_the_audits_recipe_finds_pairs_groups_and_splits_and_reads_back_what_it_wrote(tmp_path, image_folder):
    """`compute_duplicate_pairs`, `group_duplicates` and `split_rounds`, as the audit notebook runs them (the
    audit-scale benchmark: `duplicate_pairs`); the pairs and the summary the computes write are those
    `read_duplicate_pairs` and `read_audit` give a notebook opened on the run."""
    from lib.core.config import parse_params
    from lib.core.paths import run_paths
    from lib.core.step import StepRun

    params = parse_params({"reports_dir": str(tmp_path / "reports"), "evaluation": {"seeds": [1, 2]},
                           "split": {"max_group_share": 0.5},  # a class of 12 images may hold a group of 2
                           "data": {"source": "folder", "directory": str(image_folder)}})
    run = StepRun(params, run_paths(params))
    images, warnings_found = audit.curate(audit.inspect_records(sources.scan_class_folders(image_folder), MAX_PIXELS),
                                          params.data, params.audit)
    copy = images.index[images["label"] == "alpha"][:2]  # two rows of one class made feature twins
    features = np.eye(len(images))[images["usable"].to_numpy()] + 0.0
    features[copy[1]] = features[copy[0]]
    asked = []
    pairs = audit.compute_duplicate_pairs(run, images, lambda *arguments: asked.append(arguments) or features)
    assert len(asked) == 1 and asked[0][0] is images and asked[0][1:] == (params, run.paths.interim_dir)
    assert pairs[pairs["kind"] == "feature"][["a", "b"]].values.tolist() == [list(copy)]
    images["group"], chained = audit.group_duplicates(images, pairs, params.split)
    assert images.loc[copy[0], "group"] == images.loc[copy[1], "group"] and len(chained) == len(images)
    splits, leaks = audit.split_rounds(images, pairs, params)
    assert list(splits) == list(leaks.index) == ["seed-1", "seed-2"]
    assert (leaks["pairs across splits (used)"] == 0).all(), "a group stays on one side of each split"

    images["split"] = splits["seed-1"]["used"]
    summary = audit.compute_audit(run, images, pairs, splits, leaks, warnings_found, chained)
    assert summary["feature_duplicate_pairs"] == 1 and run.paths.round("seed-2").split_manifest.is_file()
    pd.testing.assert_frame_equal(audit.read_duplicate_pairs(run), pairs, check_dtype=False)
    assert audit.read_audit(run) == summary
