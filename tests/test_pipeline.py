import hashlib

import numpy as np
import pandas as pd
import pytest

from conftest import write_params
from lib import audit, experiment, pipeline, sources, split
from lib.config import load_params
from lib.paths import run_paths


def _split_data(n=10, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return pipeline.SplitData(images, np.arange(n) % 3, pd.DataFrame({"path": [f"{i}.jpg" for i in range(n)]}))


def _batches(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def test_unaugmented_stream_is_the_images_in_order_with_one_hot_labels():
    data = _split_data()
    x, y = _batches(pipeline.make_dataset(data, n_classes=3, batch_size=4))
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 255
    np.testing.assert_array_equal(x, data.images.astype(np.float32))
    np.testing.assert_array_equal(y.argmax(axis=1), data.labels)
    assert set(y.sum(axis=1)) == {1.0}


def test_shuffling_reorders_but_keeps_every_image_once():
    data = _split_data()
    x, y = _batches(pipeline.make_dataset(data, 3, 4, shuffle_seed=1))
    assert not np.array_equal(x, data.images.astype(np.float32))
    order = [next(i for i in range(len(data)) if np.array_equal(img, data.images[i])) for img in x.astype(np.uint8)]
    assert sorted(order) == list(range(len(data)))
    np.testing.assert_array_equal(y.argmax(axis=1), data.labels[order])


def test_augmentation_changes_training_pixels_only_when_asked():
    params = load_params("params/default.yaml")
    data = _split_data(size=32)
    augmenter = pipeline.build_augmentation(params.augmentation, seed=0)
    x, _ = _batches(pipeline.make_dataset(data, 3, 4, augmenter=augmenter))
    assert x.shape == (10, 32, 32, 3)
    assert not np.allclose(x, data.images.astype(np.float32))


def test_a_class_missing_from_training_is_an_error():
    manifest = pd.DataFrame(
        {"path": ["a", "b", "c"], "label": ["x", "x", "y"], "split": ["train", "val", "test"]}
    )
    with pytest.raises(ValueError, match=r"class\(es\) \['y'\] appear in validation/test but not in training"):
        pipeline.load_study_data(manifest, (8, 8))


@pytest.fixture
def prepared(tmp_path, tiny_params):
    """A split manifest written by the audit's lib functions, and its params with augmentation off."""
    params_file = write_params(
        tmp_path / "noaug.yaml",
        tiny_params | {"augmentation": {"rotation_degrees": 0, "width_shift": 0, "height_shift": 0,
                                        "shear": 0, "zoom": 0, "horizontal_flip": False}},
    )
    params = load_params(params_file)
    images = audit.inspect_records(sources.scan_class_folders(params.data.directory), params.audit.max_image_pixels)
    images["split"] = split.assign_split(images, params.split)
    split.write_split_manifest(images, run_paths(params).split_manifest)
    return experiment.prepare(str(params_file), "probe")


def _digests(array):
    return {hashlib.sha256(img.astype(np.uint8).tobytes()).hexdigest() for img in array}


def test_no_validation_or_test_image_reaches_training(prepared):
    data = prepared.data
    train_x, _ = _batches(prepared.train_ds)
    val_x, _ = _batches(prepared.val_ds)
    assert _digests(train_x) == _digests(data.train.images)
    assert not _digests(train_x) & (_digests(data.val.images) | _digests(data.test.images))
    np.testing.assert_array_equal(val_x, data.val.images.astype(np.float32))
    assert len(data.train) + len(data.val) + len(data.test) == 30
    assert prepared.class_weight_table().index.tolist() == ["alpha", "beta", "gamma"]
    assert experiment.split_sizes(prepared).sum().to_dict() == {
        "train": len(data.train), "val": len(data.val), "test": len(data.test)
    }


def test_augmentation_can_be_switched_off_entirely():
    params = load_params("params/default.yaml")
    off = params.augmentation.model_copy(
        update={"rotation_degrees": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0, "horizontal_flip": False}
    )
    assert pipeline.build_augmentation(off, seed=0) is None
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    assert all(np.array_equal(view, image) for view in pipeline.augmented_views(image, None, 3))
