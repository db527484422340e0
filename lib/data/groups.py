"""Near-duplicate groups, and splits that never put one group on both sides.

Photos of one product taken in one session look alike without being pixel duplicates, so
a random split leaks: a test image's near-twin is in training. Pairs of similar images
(close perceptual hashes, or ImageNet features with a high cosine similarity) are joined
into groups within each class: images linked by a chain of pairs form one group (so no
near-twin of an image is left on the other side), unless that chain grows beyond a size
cap; then it is a chain through look-alikes rather than one photo session, and is cut by
complete linkage into groups whose members are all pairs of each other, no larger than
the cap. A group never spans two classes. The split assigns whole groups, stratified by
class, with scikit-learn's ``StratifiedGroupKFold``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee
from scipy.spatial.distance import squareform
from sklearn.model_selection import StratifiedGroupKFold

from lib.data.split import SplitError, check_splittable


def _unit_rows(features: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``features`` (an array or a memory-mapped file), scaled to length 1."""
    rows = np.asarray(features[start:stop], dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)


def similar_feature_pairs(features: np.ndarray, min_cosine: float, block: int = 1024) -> pd.DataFrame:
    """Pairs (a, b), a < b, of rows whose cosine similarity is at least ``min_cosine``; columns a, b, cosine.

    Computed block against block (the upper triangle only), so that memory holds two blocks
    of rows and ``block`` x ``block`` similarities, whatever N; ``features`` may be memory-mapped.
    """
    if not -1.0 <= min_cosine <= 1.0:
        raise ValueError(f"min_cosine must lie in [-1, 1], got {min_cosine}")
    found = []
    for start in range(0, len(features), block):
        left = _unit_rows(features, start, start + block)
        for other in range(start, len(features), block):
            right = left if other == start else _unit_rows(features, other, other + block)
            similarity = left @ right.T
            rows, cols = np.nonzero(similarity >= min_cosine)
            keep = rows + start < cols + other
            found.append(pd.DataFrame({"a": rows[keep] + start, "b": cols[keep] + other,
                                       "cosine": similarity[rows[keep], cols[keep]]}))
    if not found:
        return pd.DataFrame(columns=["a", "b", "cosine"])
    return pd.concat(found, ignore_index=True).sort_values(["a", "b"], ignore_index=True)  # row by row, as listed


def _pair_ends(n_images: int, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    a, b = pairs["a"].to_numpy(dtype=int), pairs["b"].to_numpy(dtype=int)
    if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_images):
        raise ValueError(f"pairs refer to images outside 0..{n_images - 1}")
    return a, b


def chained_groups(n_images: int, pairs: pd.DataFrame) -> np.ndarray:
    """A group number per image: images linked by any chain of pairs share one (connected components).

    Across classes and without a cap: what the grouping did before `near_duplicate_groups`
    (it can swallow a class whose images all look a little alike), kept for comparison.
    """
    a, b = _pair_ends(n_images, pairs)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n_images, n_images))
    return connected_components(graph, directed=False)[1]


NOT_A_PAIR = 2.0  # the linkage distance of two images that are not a pair (pairs lie in [0, 1])


LINKAGE_LIMIT = 4_000  # larger components are cut by graph order instead: a dense matrix would not fit


def near_duplicate_groups(
    n_images: int, pairs: pd.DataFrame, labels=None, max_group_size: int | None = None,
    max_group_share: float | None = None,
) -> np.ndarray:
    """A group number per image: the chains of pairs within each class, cut where they outgrow the cap.

    Pairs whose images have different ``labels`` are ignored (a near-twin under another
    label is a possible label conflict, not a reason to merge two classes). Within a class,
    a connected component of the pairs (single linkage) is one group while it has at most
    ``max_group_size`` images and ``max_group_share`` of its class's images (at least one):
    every near-twin of an image stays with it. A larger component is a chain: single
    linkage is known to chain dissimilar items into one long cluster (Jain, Murty & Flynn,
    "Data clustering: a review", ACM Computing Surveys 31(3), 1999, section 5.2), which
    here can swallow a class of look-alikes. It is cut by complete linkage (scipy's, after
    Müllner, arXiv:1109.2378), which merges two clusters only while their farthest members
    are still a pair, so every two members of a group are a pair themselves; groups still
    over the cap are cut into pieces of the cap's size in dendrogram order.

    Pairs may carry a ``dissimilarity`` in [0, 1] (see `lib.data.audit.pair_dissimilarity`) that
    orders complete linkage's merges; without it every pair counts 0. Memory: one dense
    distance matrix per oversized component, up to ``LINKAGE_LIMIT`` images; beyond that the
    component is cut in reverse Cuthill-McKee order (linked images next to each other).
    """
    a, b = _pair_ends(n_images, pairs)
    dissimilarity = (pairs["dissimilarity"].to_numpy(dtype=float) if "dissimilarity" in pairs
                     else np.zeros(len(a)))
    labels = np.zeros(n_images, dtype=int) if labels is None else np.asarray(labels)
    same = labels[a] == labels[b]
    a, b, dissimilarity = a[same], b[same], dissimilarity[same]
    class_size = pd.Series(labels).value_counts()
    components = chained_groups(n_images, pd.DataFrame({"a": a, "b": b}))
    members_of = pd.Series(np.arange(n_images)).groupby(components).indices  # sorted positions
    pairs_of = pd.Series(np.arange(len(a))).groupby(components[a]).indices
    group = np.full(n_images, -1)
    next_group = 0
    for component, members in members_of.items():
        cap = group_size_cap(class_size[labels[members[0]]], max_group_size, max_group_share)
        if cap is None or len(members) <= cap:
            pieces = [members]
        else:
            within = pairs_of[component]
            pieces = _cut_component(members, a[within], b[within], dissimilarity[within], cap)
        for piece in pieces:
            group[piece] = next_group
            next_group += 1
    return group


def group_size_cap(class_images: int, max_group_size: int | None, max_group_share: float | None) -> int | None:
    """The largest group a class of ``class_images`` images may have (None: any size)."""
    caps = [max_group_size] if max_group_size else []
    if max_group_share:
        caps.append(max(1, math.floor(max_group_share * class_images)))
    return min(caps) if caps else None


def _cut_component(members, a, b, dissimilarity, cap: int) -> list[np.ndarray]:
    """One oversized component (``members``: sorted positions, with its pairs) cut into groups of
    at most ``cap`` images: by complete linkage, or by graph order when it is too large for that."""
    rows, cols = np.searchsorted(members, a), np.searchsorted(members, b)
    if len(members) > LINKAGE_LIMIT:
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(members),) * 2).tocsr()
        order = reverse_cuthill_mckee(graph + graph.T, symmetric_mode=True)
        return [members[order[start : start + cap]] for start in range(0, len(order), cap)]
    distances = np.full((len(members), len(members)), NOT_A_PAIR)
    # Two kinds of pair for the same images: the closer one counts.
    np.minimum.at(distances, (rows, cols), np.clip(dissimilarity, 0.0, 1.0))
    distances = np.minimum(distances, distances.T)
    np.fill_diagonal(distances, 0.0)
    tree = linkage(squareform(distances, checks=False), method="complete")
    # Cut between the pairs' distances and NOT_A_PAIR: every two members of a cluster are a pair.
    cluster = fcluster(tree, t=(1.0 + NOT_A_PAIR) / 2, criterion="distance")
    in_tree_order = leaves_list(tree)
    found = []
    for label in np.unique(cluster):
        clique = in_tree_order[cluster[in_tree_order] == label]
        found += [members[clique[start : start + cap]] for start in range(0, len(clique), cap)]
    return found


def grouped_stratified_split(
    labels: pd.Series, groups: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> pd.Series:
    """Train / val / test by whole groups, stratified by class as far as the groups allow.

    The test share is one fold of ``round(1 / test)`` stratified group folds; validation is
    one fold of the rest, the same way. Raises a `SplitError` naming every class that ends up
    missing from a split (its images fall into too few groups) and the largest groups.
    """
    train_share, val_share, test_share = fractions
    check_splittable(labels, fractions)
    y, groups = labels.to_numpy(), np.asarray(groups)
    rest, test = group_fold(np.arange(len(y)), y, groups, max(2, round(1 / test_share)), 0, seed)
    train, val = group_fold(rest, y, groups, max(2, round((train_share + val_share) / val_share)), 0, seed)
    return assemble_split(labels, groups, train, val, test)


def group_fold(
    members: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold`` of ``n_folds`` stratified group folds of ``members``: (the rest, the fold)."""
    n_groups = len(np.unique(groups[members]))
    if n_groups < n_folds:  # scikit-learn's own ValueError would not say why, nor what to do
        raise SplitError(
            f"a group-aware split needs at least {n_folds} near-duplicate groups here, but the "
            f"{len(members):,} images form only {n_groups}. {largest_groups_text(y[members], groups[members])}"
            f" {GROUPING_CHOICES}"
        )
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    rest, held_out = list(folds.split(members, y[members], groups[members]))[fold]
    return members[rest], members[held_out]


GROUPING_CHOICES = (
    "Raise the audit's similarity thresholds (audit.feature_min_similarity closer to 1, "
    "audit.phash_max_distance lower), cap the groups with a smaller split.max_group_size, "
    "switch grouping off with split.group_near_duplicates: false, or supply your own split "
    "with data.source: manifest."
)


def largest_groups_text(labels, groups, count: int = 3) -> str:
    """'The largest groups: 118 of 120 images of 'red', ...' for an error message."""
    table = pd.DataFrame({"label": np.asarray(labels), "group": np.asarray(groups)})
    per_class = table["label"].value_counts()
    sizes = table.groupby("group")["label"].agg(["first", "nunique", "size"]).sort_values("size", ascending=False)
    listed = ", ".join(
        f"{row['size']} of the {per_class[row['first']]} images of '{row['first']}'" if row["nunique"] == 1
        else f"{row['size']} images of {row['nunique']} classes"  # groups made elsewhere may span classes
        for _, row in sizes.head(count).iterrows()
    )
    return f"The largest groups: {listed}."


def assemble_split(labels: pd.Series, groups, train, val, test) -> pd.Series:
    """The split Series from three position arrays; a `SplitError` names each class a split lacks."""
    assigned = np.empty(len(labels), dtype=object)
    assigned[train], assigned[val], assigned[test] = "train", "val", "test"
    split = pd.Series(assigned, index=labels.index, name="split")
    missing = [
        f"'{label}' has no {name} image"
        for label in sorted(labels.unique())
        for name in ("train", "val", "test")
        if not ((labels == label) & (split == name)).any()
    ]
    if missing:
        raise SplitError(
            "a group-aware split cannot give every class an image in every split: " + "; ".join(missing)
            + ". Its images form too few near-duplicate groups (or too few for this many folds). "
            + largest_groups_text(labels, groups) + " " + GROUPING_CHOICES
        )
    return split
