"""The data audit: which files are usable images, what they look like, and which repeat.

`inspect_records` reads every file once and returns, per file: whether it is usable (and
if not, why), its size and colour mode, a content hash (exact duplicates) and a
perceptual hash (near-duplicates). Everything else here works on that table.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from html import escape
from concurrent.futures import ThreadPoolExecutor

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from lib.images import load_rgb, to_rgb

PAIR_COLUMNS = ["a", "b", "distance", "kind"]


def inspect_image(path: str, max_pixels: int) -> dict:
    """Check one file. Returns its properties, or an ``error`` saying why it is unusable."""
    result = {"error": "", "bytes": 0, "sha256": "", "phash": "", "width": 0, "height": 0, "mode": "", "format": ""}
    try:
        data = open(path, "rb").read()
    except OSError as error:  # a dangling link, a link loop, no permission
        result["error"] = f"cannot read file ({error.strerror or error})"
        return result
    result["bytes"] = len(data)
    result["sha256"] = hashlib.sha256(data).hexdigest()
    if not data:
        result["error"] = "empty file (0 bytes)"
        return result
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                result.update(width=width, height=height, mode=image.mode, format=image.format or "")
                if width * height > max_pixels:
                    result["error"] = (
                        f"declares {width}x{height} pixels, over the limit of {max_pixels:,}: "
                        "refused as a possible decompression bomb"
                    )
                    return result
                image.load()
                rgb = to_rgb(image)
    except Image.DecompressionBombError as error:
        result["error"] = f"refused as a possible decompression bomb ({error})"
        return result
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        result["error"] = f"not a readable image ({type(error).__name__}: {error})"
        return result
    result["phash"] = str(imagehash.phash(rgb))
    return result


def inspect_records(records: pd.DataFrame, max_pixels: int, workers: int | None = None) -> pd.DataFrame:
    """Inspect every record's file (in parallel, with a progress bar); one output row per record.

    Adds ``usable`` and ``reason`` columns: files skipped by the scan or that failed to
    decode are unusable, with the reason in words.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    records = records.reset_index(drop=True)
    skipped = records["skip_reason"].fillna("") if "skip_reason" in records else pd.Series("", index=records.index)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Files the scan already set aside are not opened.
        found = list(
            tqdm(
                pool.map(
                    lambda job: inspect_image(job[0], max_pixels) if not job[1] else {"error": ""},
                    zip(records["path"], skipped),
                ),
                total=len(records),
                desc="Inspecting images",
                unit="img",
            )
        )
    table = pd.concat([records, pd.DataFrame(found)], axis=1)
    for column, empty in (("bytes", 0), ("sha256", ""), ("phash", ""), ("width", 0), ("height", 0),
                          ("mode", ""), ("format", "")):
        table[column] = table[column].fillna(empty) if column in table else empty
    table["reason"] = skipped.where(skipped != "", table["error"])
    table["usable"] = table["reason"] == ""
    return table.drop(columns=[c for c in ("skip_reason", "error") if c in table])


# --------------------------------------------------------------------------------------
# Class balance
# --------------------------------------------------------------------------------------


def class_counts(images: pd.DataFrame) -> pd.Series:
    """Images per class, largest first."""
    return images["label"].value_counts().rename("images").rename_axis("class")


def imbalance_ratio(counts: pd.Series) -> float:
    """Largest class over smallest class."""
    return float(counts.max() / counts.min())


# --------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------


def exact_duplicate_pairs(images: pd.DataFrame) -> pd.DataFrame:
    """Every pair of rows with byte-identical content (same sha256)."""
    rows = []
    for _, group in images[images["sha256"] != ""].groupby("sha256"):
        index = group.index.tolist()
        rows += [(a, b, 0, "exact") for i, a in enumerate(index) for b in index[i + 1 :]]
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def near_duplicate_pairs(images: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """Every pair of rows whose perceptual hashes differ in at most ``max_distance`` bits."""
    valid = images[images["phash"] != ""]
    if len(valid) < 2:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    hashes = np.array([int(h, 16) for h in valid["phash"]], dtype=np.uint64)
    index = valid.index.to_numpy()
    rows = []
    for i in range(len(hashes) - 1):
        distances = np.bitwise_count(hashes[i] ^ hashes[i + 1 :])
        for j in np.flatnonzero(distances <= max_distance):
            rows.append((index[i], index[i + 1 + j], int(distances[j]), "near"))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def feature_duplicate_pairs(images: pd.DataFrame, features: np.ndarray, min_cosine: float) -> pd.DataFrame:
    """Pairs of usable images whose feature vectors (rows of ``features``, in the order of the
    usable rows of ``images``) have a cosine similarity of at least ``min_cosine``."""
    from lib.groups import similar_feature_pairs

    index = images.index[images["usable"]].to_numpy()
    if len(index) != len(features):
        raise ValueError(f"{len(features)} feature vectors for {len(index)} usable images")
    found = similar_feature_pairs(features, min_cosine)
    return pd.DataFrame({
        "a": index[found["a"].to_numpy(dtype=int)], "b": index[found["b"].to_numpy(dtype=int)],
        "distance": found["cosine"].to_numpy(dtype=float), "kind": "feature",
    }, columns=PAIR_COLUMNS)


def duplicate_groups(images: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """A near-duplicate group number per row of ``images``: rows linked by any chain of pairs share one."""
    from lib.groups import near_duplicate_groups

    positions = pd.Series(np.arange(len(images)), index=images.index)
    return near_duplicate_groups(len(images), pd.DataFrame({
        "a": positions[pairs["a"]].to_numpy(), "b": positions[pairs["b"]].to_numpy(),
    }))


def leaks_by_round(pairs: pd.DataFrame, splits: dict[str, dict[str, pd.Series]]) -> pd.DataFrame:
    """Per round, for the plain stratified split and the split used: duplicate pairs whose two
    images lie in different splits, and test images with a duplicate in training."""
    rows = []
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    for name, kinds in splits.items():
        row = {"round": name}
        for kind, split in kinds.items():
            side_a, side_b = split.loc[a].to_numpy(), split.loc[b].to_numpy()
            both_used = (side_a != "") & (side_b != "")  # an unusable image is in no split
            row[f"pairs across splits ({kind})"] = int(((side_a != side_b) & both_used).sum())
            tested = np.concatenate([a[(side_a == "test") & (side_b == "train")], b[(side_b == "test") & (side_a == "train")]])
            row[f"test images with a training near-duplicate ({kind})"] = len(np.unique(tested))
        rows.append(row)
    return pd.DataFrame(rows).set_index("round")


def describe_pairs(pairs: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Pairs with both files' paths, labels and splits, and whether the pair crosses splits."""
    columns = ["path", "relpath", "label", "split"]
    a = images.loc[pairs["a"], columns].add_suffix("_a").reset_index(drop=True)
    b = images.loc[pairs["b"], columns].add_suffix("_b").reset_index(drop=True)
    described = pd.concat([pairs[["distance", "kind"]].reset_index(drop=True), a, b], axis=1)
    described["cross_split"] = described["split_a"] != described["split_b"]
    return described


def leak_summary(described_pairs: pd.DataFrame) -> pd.DataFrame:
    """How many pairs (and which split combinations) cross splits, per kind of duplicate."""
    crossing = described_pairs[described_pairs["cross_split"]]
    combos = crossing.apply(lambda r: " / ".join(sorted([r["split_a"], r["split_b"]])), axis=1)
    if crossing.empty:
        return pd.DataFrame(columns=["kind", "splits", "pairs"])
    return (
        crossing.assign(splits=combos)
        .groupby(["kind", "splits"])
        .size()
        .rename("pairs")
        .reset_index()
    )


# --------------------------------------------------------------------------------------
# Showing and saving
# --------------------------------------------------------------------------------------


def sample_per_class(images: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """Up to ``per_class`` usable images of each class, drawn reproducibly."""
    usable = images[images["usable"]]
    return pd.concat(
        group.sample(n=min(per_class, len(group)), random_state=seed) for _, group in usable.groupby("label")
    )


def summarize(images: pd.DataFrame, pairs: pd.DataFrame) -> dict:
    """The audit's headline numbers, as saved to ``audit.json`` and quoted by the report."""
    usable = images[images["usable"]]
    counts = class_counts(usable)
    crossing = pairs[pairs["cross_split"]]
    return {
        "files_examined": int(len(images)),
        "images_usable": int(len(usable)),
        "files_excluded": int((~images["usable"]).sum()),
        "classes": {str(label): int(n) for label, n in counts.items()},
        "imbalance_ratio": imbalance_ratio(counts),
        "split_sizes": {str(s): int(n) for s, n in usable["split"].value_counts().items()},
        "exact_duplicate_pairs": int((pairs["kind"] == "exact").sum()),
        "near_duplicate_pairs": int((pairs["kind"] == "near").sum()),
        "feature_duplicate_pairs": int((pairs["kind"] == "feature").sum()),
        "feature_duplicate_pairs_across_splits": int((crossing["kind"] == "feature").sum()),
        "exact_duplicate_pairs_across_splits": int((crossing["kind"] == "exact").sum()),
        "near_duplicate_pairs_across_splits": int((crossing["kind"] == "near").sum()),
        "test_images_with_a_train_duplicate": int(
            pd.concat(
                [
                    crossing.loc[(crossing["split_a"] == "test") & (crossing["split_b"] == "train"), "relpath_a"],
                    crossing.loc[(crossing["split_b"] == "test") & (crossing["split_a"] == "train"), "relpath_b"],
                ]
            ).nunique()
        ),
    }


def write_outputs(
    images: pd.DataFrame, pairs: pd.DataFrame, splits: dict[str, dict[str, pd.Series]], leaks: pd.DataFrame,
    paths, params,
) -> dict:
    """Write each round's split manifest, the image table, the excluded files and the summary.

    ``images["split"]`` is the first round's split (what the audit's figures show). Returns
    the summary.
    """
    from lib.provenance import manifest_sha256
    from lib.split import write_split_manifest

    manifests = {
        name: write_split_manifest(images.assign(split=kinds["used"]), paths.round(name).split_manifest)
        for name, kinds in splits.items()
    }
    images.to_csv(paths.image_table, index=False)
    images.loc[~images["usable"], ["relpath", "label", "reason"]].to_csv(paths.excluded, index=False)
    summary = summarize(images, pairs) | {
        "thresholds": {"phash_max_distance": params.audit.phash_max_distance,
                       "feature_min_similarity": params.audit.feature_min_similarity},
        "group_near_duplicates": params.split.group_near_duplicates,
        "near_duplicate_groups": int(images.loc[images["usable"], "group"].nunique()),
        "largest_group": int(images.loc[images["usable"], "group"].value_counts().max()),
        "leaks_by_round": leaks.reset_index().to_dict(orient="records"),
        "round_manifest_sha256": {name: manifest_sha256(m) for name, m in manifests.items()},
        "manifest_sha256": manifest_sha256(next(iter(manifests.values()))),
    }
    paths.audit_summary.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def findings_markdown(summary: dict) -> str:
    """The audit's findings in a few sentences of Markdown (class names escaped: they are data)."""
    counts = summary["classes"]
    largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
    lines = [
        f"- **{summary['images_usable']:,}** usable images in **{len(counts)}** classes "
        f"({summary['files_excluded']} file(s) excluded).",
        f"- Largest class *{escape(largest)}* ({counts[largest]:,}), smallest *{escape(smallest)}* "
        f"({counts[smallest]:,}): an imbalance ratio of **{summary['imbalance_ratio']:.1f} : 1**.",
        f"- Exact duplicate pairs: {summary['exact_duplicate_pairs']} "
        f"({summary['exact_duplicate_pairs_across_splits']} across splits); near-duplicate pairs: "
        f"{summary['near_duplicate_pairs']} ({summary['near_duplicate_pairs_across_splits']} across splits).",
        f"- Feature near-duplicate pairs (cosine of ImageNet features at least "
        f"{summary['thresholds']['feature_min_similarity']}): {summary['feature_duplicate_pairs']} "
        f"({summary['feature_duplicate_pairs_across_splits']} across the first round's splits).",
        f"- Test images with a duplicate or near-duplicate in training (first round): "
        f"**{summary['test_images_with_a_train_duplicate']}** of {summary['split_sizes'].get('test', 0)}"
        + (" after keeping near-duplicate groups whole." if summary["group_near_duplicates"]
           else " (near-duplicate groups are not kept whole: split.group_near_duplicates is off)."),
    ]
    return "\n".join(lines)
