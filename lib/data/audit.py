"""The data audit: which files are usable images, what they look like, and which repeat.

`inspect_records` reads every file once and returns, per file: whether it is usable (and
if not, why), its size and colour mode, a content hash (exact duplicates) and a
perceptual hash (near-duplicates). Everything else here works on that table.

The audit's recipe, as the audit notebook and ``benchmarks/audit_scale.py`` both run it: `inspect_records`
and `curate` (the usable images), `duplicate_pairs` (exact, pHash and feature pairs; the features are
MobileNetV2's, `lib.training.features.audit_features`), `group_duplicates` (near-duplicate groups within
each class) and `split_rounds` (every round's split and its leaks). Its results (`lib.core.step`): the pairs
(`compute_duplicate_pairs` / `read_duplicate_pairs`) and what later steps read (`compute_audit` / `read_audit`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from lib.core import progress
from lib.core.provenance import manifest_sha256
from lib.core.step import StepRun
from lib.data.groups import chained_groups, near_duplicate_groups, similar_feature_pairs
from lib.data.images import to_rgb, truncated_files_refused
from lib.data.rounds import assign_round_splits
from lib.data.split import write_split_manifest

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
        with warnings.catch_warnings(), truncated_files_refused():
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
    inspected = progress.ImagesDone("images inspected", len(records))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Files the scan already set aside are not opened.
        found = []
        for result in tqdm(
            pool.map(lambda job: inspect_image(job[0], max_pixels) if not job[1] else {"error": ""},
                     zip(records["path"], skipped)),
            total=len(records),
            desc="Inspecting images",
            unit="img",
        ):
            found.append(result)
            inspected.add(1)
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

    index = images.index[images["usable"]].to_numpy()
    if len(index) != len(features):
        raise ValueError(f"{len(features)} feature vectors for {len(index)} usable images")
    found = similar_feature_pairs(features, min_cosine)
    return pd.DataFrame({
        "a": index[found["a"].to_numpy(dtype=int)], "b": index[found["b"].to_numpy(dtype=int)],
        "distance": found["cosine"].to_numpy(dtype=float), "kind": "feature",
    }, columns=PAIR_COLUMNS)


def pair_dissimilarity(pairs: pd.DataFrame, phash_bits: int = 64) -> np.ndarray:
    """Each pair's distance on one scale in [0, 1], for ordering the grouping's merges:
    0 for an exact copy, pHash bits over 64, one minus the cosine of the features."""
    kind, distance = pairs["kind"].to_numpy(), pairs["distance"].to_numpy(dtype=float)
    return np.select([kind == "exact", kind == "near", kind == "feature"],
                     [0.0, distance / phash_bits, 1.0 - distance], default=0.0)


def duplicate_groups(images: pd.DataFrame, pairs: pd.DataFrame, max_group_size: int | None = None,
                     max_group_share: float | None = None, chained: bool = False) -> np.ndarray:
    """A near-duplicate group number per row of ``images``, formed within each class among the
    usable images (`lib.data.groups.near_duplicate_groups`); each unusable row is a group of its own.

    ``chained=True`` gives the connected components of the pairs instead (any chain of pairs
    is one group, across classes too): what the grouping did before, for comparison.
    """

    positions = pd.Series(np.arange(len(images)), index=images.index)
    usable = images["usable"].to_numpy()
    a, b = positions[pairs["a"]].to_numpy(dtype=int), positions[pairs["b"]].to_numpy(dtype=int)
    both_usable = usable[a] & usable[b]
    linked = pd.DataFrame({"a": a[both_usable], "b": b[both_usable],
                           "dissimilarity": pair_dissimilarity(pairs)[both_usable]})
    if chained:
        return chained_groups(len(images), linked)
    # Unusable rows count in no class size: each gets a label of its own.
    labels = np.where(usable, images["label"].astype(str).to_numpy(), [f"\0unusable {i}" for i in range(len(images))])
    return near_duplicate_groups(len(images), linked, labels, max_group_size, max_group_share)


def duplicate_pairs(images: pd.DataFrame, features: np.ndarray, audit_params) -> pd.DataFrame:
    """Every duplicate pair of ``images``: byte-identical files, perceptual hashes within
    ``audit.phash_max_distance`` bits, and ``features`` (one row per usable image) with a cosine similarity of at
    least ``audit.feature_min_similarity``; one table of `PAIR_COLUMNS`, rows of ``images`` in ``a`` and ``b``."""
    return pd.concat([exact_duplicate_pairs(images), near_duplicate_pairs(images, audit_params.phash_max_distance),
                      feature_duplicate_pairs(images, features, audit_params.feature_min_similarity)],
                     ignore_index=True)


def compute_duplicate_pairs(run: StepRun, images: pd.DataFrame, features) -> pd.DataFrame:
    """`duplicate_pairs` of ``images`` at ``run.params``' thresholds, on ``features(images, params, spill_dir)``
    (`lib.training.features.audit_features`, which ``lib.data`` stands below), written to ``data/``."""
    params, paths = run.params, run.paths
    pairs = duplicate_pairs(images, features(images, params, paths.interim_dir), params.audit)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(paths.duplicate_pairs, index=False)
    return pairs


def read_duplicate_pairs(run: StepRun) -> pd.DataFrame:
    """The pairs `compute_duplicate_pairs` wrote: rows of the image table, which the same inputs give again."""
    return pd.read_csv(run.paths.duplicate_pairs)


def group_duplicates(images: pd.DataFrame, pairs: pd.DataFrame, split_params) -> tuple[np.ndarray, np.ndarray]:
    """The near-duplicate group of each row of ``images`` (`duplicate_groups`, capped at ``split.max_group_size``
    images and ``split.max_group_share`` of a class), and the groups chaining every pair would have made instead."""
    groups = duplicate_groups(images, pairs, split_params.max_group_size, split_params.max_group_share)
    return groups, duplicate_groups(images, pairs, chained=True)


def split_rounds(images: pd.DataFrame, pairs: pd.DataFrame, params) -> tuple[dict[str, dict[str, pd.Series]],
                                                                             pd.DataFrame]:
    """Every evaluation round's split of ``images`` (with their ``group``: `lib.data.rounds.assign_round_splits`,
    a plain stratified split and the split used), and the duplicate pairs each leaves across splits
    (`leaks_by_round`)."""
    splits = assign_round_splits(images, images["group"].to_numpy(), params)
    return splits, leaks_by_round(pairs, splits)


def group_sizes(images: pd.DataFrame) -> pd.Series:
    """How many near-duplicate groups of the usable images have each size (index: size)."""
    sizes = images.loc[images["usable"], "group"].value_counts()
    return sizes.value_counts().sort_index().rename("groups").rename_axis("images in the group")


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
# Leaving images out, and warnings
# --------------------------------------------------------------------------------------

WARNING_COLUMNS = ["relpath", "label", "warning", "excluded"]


def _leave_out(images: pd.DataFrame, rows, reasons: pd.Series) -> pd.DataFrame:
    """``images`` with the usable ``rows`` (a boolean mask) made unusable, each with its reason."""
    rows = rows & images["usable"]
    images = images.copy()
    images.loc[rows, "reason"] = reasons[rows]
    images.loc[rows, "usable"] = False
    return images


def exclude_classes(images: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Leave out every image of the named classes; a name that is no class is an error (a typo)."""
    unknown = sorted(set(classes) - set(images["label"]))
    if unknown:
        raise ValueError(f"data.exclude_classes names class(es) not in the dataset: {unknown}; "
                         f"its classes are {sorted(images['label'].unique())}")
    rows = images["label"].isin(classes)
    return _leave_out(images, rows, pd.Series("class left out by data.exclude_classes", index=images.index))


def label_conflicts(images: pd.DataFrame) -> pd.DataFrame:
    """Usable images whose exact bytes (sha256) also appear, usable, under another class."""
    usable = images[images["usable"] & (images["sha256"] != "")]
    labels_of = usable.groupby("sha256")["label"].agg(lambda labels: sorted(set(labels)))
    conflicting = usable[usable["sha256"].map(labels_of).str.len() > 1]
    others = [", ".join(f"'{label}'" for label in labels_of[sha] if label != own)
              for sha, own in zip(conflicting["sha256"], conflicting["label"])]
    also_under = pd.Series(others, index=conflicting.index, dtype=object)
    return conflicting[["relpath", "label", "sha256"]].assign(also_under=also_under)


def leave_out_label_conflicts(images: pd.DataFrame, conflicts: pd.DataFrame) -> pd.DataFrame:
    """Leave out every copy of a file filed under two or more classes (which label is right is unknown)."""
    reasons = "label conflict: the same file (identical bytes) is also under class " + conflicts["also_under"]
    return _leave_out(images, images.index.isin(conflicts.index), reasons.reindex(images.index, fill_value=""))


def extreme_images(images: pd.DataFrame, min_side: int, max_aspect_ratio: float) -> pd.DataFrame:
    """Usable images with a side below ``min_side`` pixels or a long side over ``max_aspect_ratio``
    times the short one: resizing them to the input size invents or squashes most of the picture."""
    usable = images[images["usable"]]
    width, height = usable["width"].astype(int), usable["height"].astype(int)
    short, long = np.minimum(width, height), np.maximum(width, height)
    small, thin = short < min_side, long > max_aspect_ratio * short
    found = usable.loc[small | thin, ["relpath", "label", "width", "height"]]
    found["warning"] = [
        "; ".join(([f"{w}x{h} pixels, a side below audit.min_image_side ({min_side})"] if is_small else [])
                  + ([f"{w}x{h} pixels, aspect ratio {max(w, h) / max(min(w, h), 1):.1f} over "
                      f"audit.max_aspect_ratio ({max_aspect_ratio:g})"] if is_thin else []))
        for w, h, is_small, is_thin in zip(found["width"], found["height"], small[small | thin], thin[small | thin])
    ]
    return found


def small_classes(images: pd.DataFrame, min_images: int) -> pd.Series:
    """Classes with fewer than ``min_images`` usable images, with their counts (smallest first)."""
    counts = images.loc[images["usable"], "label"].value_counts()
    return counts[counts < min_images].sort_values()


def curate(images: pd.DataFrame, data, audit_params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the params' choices of what to leave out, in order; returns (images, warnings).

    Classes named in ``data.exclude_classes`` go first; then label conflicts (left out unless
    ``audit.keep_label_conflicts``); extreme images (warned about, left out only with
    ``audit.exclude_extreme_images``); last, with ``data.min_images_per_class`` set, classes
    left with fewer usable images than that. Every image left out keeps its reason, and
    every warning is one row of the returned table.
    """
    warnings_found = []
    images = exclude_classes(images, list(data.exclude_classes))
    conflicts = label_conflicts(images)
    if not audit_params.keep_label_conflicts:
        images = leave_out_label_conflicts(images, conflicts)
    warnings_found.append(pd.DataFrame({
        "relpath": conflicts["relpath"], "label": conflicts["label"],
        "warning": "label conflict: identical bytes also under class " + conflicts["also_under"],
        "excluded": not audit_params.keep_label_conflicts,
    }))
    extreme = extreme_images(images, audit_params.min_image_side, audit_params.max_aspect_ratio)
    if audit_params.exclude_extreme_images:
        reasons = ("extreme image: " + extreme["warning"]).reindex(images.index, fill_value="")
        images = _leave_out(images, images.index.isin(extreme.index), reasons)
    warnings_found.append(extreme[["relpath", "label", "warning"]].assign(excluded=audit_params.exclude_extreme_images))
    if data.min_images_per_class is not None:
        small = small_classes(images, data.min_images_per_class)
        reasons = images["label"].map(
            lambda label: f"class has {small[label]} usable image{'' if small[label] == 1 else 's'}, fewer than "
            f"data.min_images_per_class ({data.min_images_per_class})" if label in small else ""
        )
        images = _leave_out(images, images["label"].isin(small.index), reasons)
    found = [table for table in warnings_found if not table.empty]
    table = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=WARNING_COLUMNS)
    for sentence in warning_sentences(table):
        progress.warn(sentence)  # the runner shows it: the person running the study should know
    return images, table


def warning_sentences(warnings_found: pd.DataFrame) -> list[str]:
    """`curate`'s warnings in words, one sentence per kind (label conflicts, extreme images)."""
    conflict = warnings_found["warning"].str.startswith("label conflict")
    sentences = []
    for rows, what, switch in (
        (conflict, "file(s) whose identical bytes are also filed under another class (label conflicts)",
         "audit.keep_label_conflicts"),
        (~conflict, "extreme image(s): a side below audit.min_image_side or a long side over audit.max_aspect_ratio "
         "times the short one", "audit.exclude_extreme_images"),
    ):
        if rows.any():
            excluded = bool(warnings_found.loc[rows, "excluded"].iloc[0])
            sentences.append(f"{int(rows.sum())} {what}: {'left out' if excluded else 'kept'} ({switch}); "
                             "the audit's data/warnings.csv lists them")
    return sentences


def cross_class_pairs(described_pairs: pd.DataFrame) -> pd.DataFrame:
    """Near-duplicate pairs (pHash or features) whose two images carry different labels: for review."""
    found = described_pairs[(described_pairs["label_a"] != described_pairs["label_b"])
                            & described_pairs["kind"].isin(["near", "feature"])]
    return found[["kind", "distance", "relpath_a", "label_a", "relpath_b", "label_b"]].reset_index(drop=True)


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


def compute_audit(
    run: StepRun, images: pd.DataFrame, pairs: pd.DataFrame, splits: dict[str, dict[str, pd.Series]],
    leaks: pd.DataFrame, warnings_found: pd.DataFrame | None = None, chained: np.ndarray | None = None,
) -> dict:
    """Write each round's split manifest, the image table, the excluded files, the warnings, the
    near-duplicates across classes and the summary into ``run.paths``; returns the summary.

    ``images["split"]`` is the first round's split (what the audit's figures show); ``pairs``: `duplicate_pairs`;
    ``chained`` the groups chaining would have made (`group_duplicates`), for the summary's before/after.
    """
    paths, params, pairs = run.paths, run.params, describe_pairs(pairs, images)
    paths.data_dir.mkdir(parents=True, exist_ok=True)

    manifests = {
        name: write_split_manifest(images.assign(split=kinds["used"]), paths.round(name).split_manifest)
        for name, kinds in splits.items()
    }
    images.to_csv(paths.image_table, index=False)
    images.loc[~images["usable"], ["relpath", "label", "reason"]].to_csv(paths.excluded, index=False)
    warnings_found = pd.DataFrame(columns=WARNING_COLUMNS) if warnings_found is None else warnings_found
    warnings_found.to_csv(paths.warnings, index=False)
    review = cross_class_pairs(pairs)
    review.to_csv(paths.cross_class_pairs, index=False)
    usable = images["usable"].to_numpy()
    grouping = {"max_group_size": params.split.max_group_size, "max_group_share": params.split.max_group_share}
    if chained is not None:
        chained_sizes = pd.Series(np.asarray(chained)[usable]).value_counts()
        grouping |= {"chained_groups": int(len(chained_sizes)), "largest_chained_group": int(chained_sizes.max())}
    summary = summarize(images, pairs) | grouping | {
        "label_conflicts": int(warnings_found["warning"].str.startswith("label conflict").sum()),
        "extreme_images": int((~warnings_found["warning"].str.startswith("label conflict")).sum()),
        "cross_class_pairs": int(len(review)),
        "thresholds": {"phash_max_distance": params.audit.phash_max_distance,
                       "feature_min_similarity": params.audit.feature_min_similarity},
        "group_near_duplicates": params.split.group_near_duplicates,
        "near_duplicate_groups": int(images.loc[images["usable"], "group"].nunique()),
        "largest_group": int(images.loc[images["usable"], "group"].value_counts().max()),
        "leaks_by_round": leaks.reset_index().to_dict(orient="records"),
        "round_manifest_sha256": {name: manifest_sha256(m) for name, m in manifests.items()},
    }
    paths.audit_summary.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def read_audit(run: StepRun) -> dict:
    """The summary `compute_audit` returned, from the run's ``data/audit.json``."""
    return json.loads(run.paths.audit_summary.read_text())
