"""The report's words about the data: what the images show, how many each class has, what the audit found.

Every sentence here follows the run's own data: the subject of the images comes from the params
(``report.subject``), balanced classes are described as balanced, a range of class sizes is given only
when the sizes differ, and a count agrees with its noun and verb (`lib.report.document.count`).
Sentences about the original study appear only in a report on the replication's data (`is_replication`).
"""

from __future__ import annotations

import pandas as pd

from lib.report.document import count, escape

# The replication's data: the original study's five classes, its 14-image class, from Grocery Store
# (params/default.yaml). Sentences about the original study appear only in a report on this data.
REPLICATION_DATA = {"source": "grocery_store",
                    "grocery_store": {"label_level": "coarse", "classes": ["Apple", "Juice", "Yoghurt", "Milk", "Oat-Milk"],
                                      "max_per_class": {"Oat-Milk": 14}}}
# A class with at most 1 / IMBALANCED_RATIO of the largest class's images is called small ("only N images").
IMBALANCED_RATIO = 1.5


def is_replication(params) -> bool:
    """Whether the run studies the replication's data (whatever its other params)."""
    data = params.to_dict()["data"]
    return data["source"] == REPLICATION_DATA["source"] and data["grocery_store"] == REPLICATION_DATA["grocery_store"]


def subject(params) -> str:
    """What the images show (``report.subject``); unset: 'product photographs' for the Grocery Store dataset,
    'images' for a folder or a manifest."""
    if params.report.subject:
        return params.report.subject
    return "product photographs" if params.data.source == "grocery_store" else "images"


def smallest_class(audit: dict) -> tuple[str, int]:
    counts = audit["classes"]
    name = min(counts, key=counts.get)
    return name, counts[name]


def largest_class(audit: dict) -> tuple[str, int]:
    counts = audit["classes"]
    name = max(counts, key=counts.get)
    return name, counts[name]


def is_balanced(audit: dict) -> bool:
    """Every class has the same number of usable images."""
    return len(set(audit["classes"].values())) == 1


def is_imbalanced(audit: dict) -> bool:
    """The largest class has at least `IMBALANCED_RATIO` times the smallest's images."""
    return largest_class(audit)[1] >= IMBALANCED_RATIO * smallest_class(audit)[1]


def class_sizes_clause(audit: dict) -> str:
    """After 'N images in K classes': 'of 40 images each', 'of 35 to 40 images each', or 'whose smallest class,
    <i>X</i>, has only 14 images'."""
    (small, small_n), (_, large_n) = smallest_class(audit), largest_class(audit)
    if is_balanced(audit):
        return f"of {count(small_n, 'image')} each"
    if not is_imbalanced(audit):
        return f"of {small_n:,} to {large_n:,} images each"
    return f"whose smallest class, <i>{escape(small)}</i>, has only {count(small_n, 'image')}"


def class_range_words(audit: dict) -> str:
    """The classes' sizes in words: '<i>A</i> (40 images) down to <i>B</i> (14 images)', or 'balanced, 40 images each'."""
    (small, small_n), (large, large_n) = smallest_class(audit), largest_class(audit)
    if is_balanced(audit):
        return f"balanced, {count(small_n, 'image')} each"
    return (f"from <i>{escape(large)}</i> ({count(large_n, 'image')}) down to <i>{escape(small)}</i> "
            f"({count(small_n, 'image')})")


def splits_words(params) -> str:
    """How the rounds split the data: 'on several splits that keep near-duplicate images together', 'on one split
    (near-duplicate grouping switched off)'."""
    evaluation = params.evaluation
    rounds = len(evaluation.seeds) * (evaluation.folds if evaluation.scheme == "kfold" else 1)
    splits = "one split" if rounds == 1 else "several splits"
    if not params.split.group_near_duplicates:
        return f"on {splits} (near-duplicate grouping switched off)"
    return f"on {splits} that {'keeps' if rounds == 1 else 'keep'} near-duplicate images together"


def introduction_html(params, audit: dict) -> str:
    """The introduction: for the replication, the study it replicates and what we do differently; for any other
    data, that data (source, classes, sizes) and the question the report answers on it."""
    how = splits_words(params)
    if is_replication(params):
        return (
            "<p>Recognising products from photographs taken in shops is a small-data problem: a few hundred images "
            "per product, and some products photographed only a handful of times. The study we replicate compared "
            "two answers to it on 1,909 product photographs in five classes, one of which had only 14 images: a "
            "small convolutional network (CNN) trained from scratch, and MobileNetV2 pretrained on ImageNet and "
            "adapted by transfer learning. Its open problems were class imbalance, the small dataset and "
            "overfitting; both of its models scored an F1 of zero on the 14-image class, and its test images leaked "
            "into training; it also fed MobileNetV2 pixels in [0, 1], not the [−1, 1] its ImageNet weights expect. "
            "We repeat the comparison on open data (the Grocery Store dataset, Klasson et al., 2019: "
            f"five of its coarse classes, one sampled down to 14 images), {how}, with the minority-class method "
            "chosen on validation data only, and report every number, interval and test from the run itself.</p>"
        )
    classes = len(audit["classes"])
    return (
        f"<p>This report compares two ways to classify {escape(subject(params))} on the data of this run: a small "
        "convolutional network (CNN) trained from scratch, and MobileNetV2 pretrained on ImageNet and adapted by "
        f"transfer learning. The data: {escape(source_description(params))}, "
        f"{count(audit['images_usable'], 'usable image')} in {count(classes, 'class', 'classes')}, "
        f"{class_range_words(audit)}. Both models are trained and tested {how}, with "
        f"{'every choice' if is_balanced(audit) else 'the minority-class method'} made on validation data only; "
        "every number, interval and test comes from the run itself.</p>"
    )


def source_description(params) -> str:
    """Where the run's images come from, in words (a folder or manifest by its name, not its whole path)."""
    data = params.data
    if data.source == "folder":
        return f"the image folder “{data.directory.name}” (one sub-folder per class)"
    if data.source == "manifest":
        return f"the images listed in “{data.manifest.name}”, with the split it gives"
    chosen = data.grocery_store
    which = "all" if chosen.classes is None else "a selection"
    return f"{which} of the {chosen.label_level} classes of the Grocery Store dataset (Klasson et al., 2019)"


def data_html(audit: dict, image_size: tuple[int, int]) -> str:
    """The audit's findings: files kept, class sizes (and imbalance), the first round's split, duplicates, groups."""
    (small, small_n), (large, large_n) = smallest_class(audit), largest_class(audit)
    sizes = audit["split_sizes"]
    excluded = audit["files_excluded"]
    balance = (f"Every class has {count(small_n, 'image')}: the classes are balanced." if is_balanced(audit) else
               f"The largest class, <i>{escape(large)}</i>, has {count(large_n, 'image')} and the smallest, "
               f"<i>{escape(small)}</i>, {small_n:,}: an imbalance ratio of {audit['imbalance_ratio']:.1f} to 1.")
    leaks = audit["test_images_with_a_train_duplicate"]
    return (
        f"<p>The audit examined {count(audit['files_examined'], 'file')} and kept {count(audit['images_usable'], 'image')} "
        f"({excluded:,} excluded as unreadable or not images). {balance} The first evaluation round's stratified split "
        f"gives {sizes.get('train', 0):,} training, {sizes.get('val', 0):,} validation and "
        f"{sizes.get('test', 0):,} test images. All images are resized to {image_size[0]} × {image_size[1]} "
        f"pixels.</p><p>Exact duplicates (identical bytes): {count(audit['exact_duplicate_pairs'], 'pair')}, "
        f"{audit['exact_duplicate_pairs_across_splits']:,} of them across splits. Near-duplicates (perceptual "
        f"hashes within the audit's threshold): {count(audit['near_duplicate_pairs'], 'pair')}, "
        f"{audit['near_duplicate_pairs_across_splits']:,} across splits; {count(leaks, 'test image')} of the first "
        f"round {'has' if leaks == 1 else 'have'} a near-duplicate in training.</p>"
        + grouping_html(audit)
    )


def grouping_html(audit: dict) -> str:
    """What near-duplicate grouping found, and the leaks before and after it, from the audit's summary."""
    leaks = pd.DataFrame(audit["leaks_by_round"])
    plain, used = (leaks[f"test images with a training near-duplicate ({kind})"] for kind in ("plain", "used"))
    thresholds = audit["thresholds"]
    how = (
        "Every split keeps these groups whole" if audit["group_near_duplicates"]
        else "Grouping is switched off (split.group_near_duplicates), so the splits ignore these groups"
    )
    largest = audit["largest_group"]
    return (
        f"<p>Pictures of one object taken in one session look alike without being copies. Pairs of images "
        f"whose ImageNet MobileNetV2 features have a cosine similarity of at least "
        f"{thresholds['feature_min_similarity']} ({count(audit['feature_duplicate_pairs'], 'pair')}), or whose perceptual "
        f"hashes differ by at most {thresholds['phash_max_distance']} bits, are joined into near-duplicate groups: "
        f"{count(audit['near_duplicate_groups'], 'group')}, the largest of {count(largest, 'image')}. {how}. "
        f"Test images with a near-duplicate in training, over {'the ' + count(len(leaks), 'round') if len(leaks) > 1 else 'the one round'}: "
        f"{int(plain.sum())} with plain stratified splits, <b>{int(used.sum())}</b> with the splits used.</p>"
    )


def audit_findings(summary: dict) -> str:
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
        f"- Near-duplicate groups (chains of pairs within each class, cut by complete linkage beyond "
        f"{summary['max_group_size'] or 'any number of'} images or {summary.get('max_group_share') or 1:.0%} of "
        f"the class): {summary['near_duplicate_groups']:,}, the largest "
        f"of {summary['largest_group']} images"
        + (f"; chaining the pairs instead would have made {summary['chained_groups']:,}, the largest of "
           f"{summary['largest_chained_group']}." if "chained_groups" in summary else "."),
        f"- Label conflicts (identical files under two classes): {summary['label_conflicts']}; extreme images "
        f"(tiny or very elongated): {summary['extreme_images']}; near-duplicate pairs across classes, to "
        f"review: {summary['cross_class_pairs']}.",
    ]
    return "\n".join(lines)
