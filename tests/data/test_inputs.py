import hashlib
import os

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.core.config import AugmentationParams, load_params
from lib.core.minority import METHODS
from lib.data import augmentation, inputs, pixels, sources
from lib.training import experiment


def _split_data(n=10, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return pixels.SplitData(images, np.arange(n) % 3, pd.DataFrame({"path": [f"{i}.jpg" for i in range(n)]}))


def _batches(dataset):
    """One epoch of a `lib.data.inputs.Batches`, as (images, one-hot labels)."""
    xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def test_unaugmented_stream_is_the_images_in_order_with_one_hot_labels():
    data = _split_data()
    x, y = _batches(inputs.evaluation_stream(data, n_classes=3, batch_size=4))
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 255
    np.testing.assert_array_equal(x, data.images.astype(np.float32))
    np.testing.assert_array_equal(y.argmax(axis=1), data.labels)
    assert set(y.sum(axis=1)) == {1.0}


def test_shuffling_reorders_but_keeps_every_image_once():
    data = _split_data()
    x, y = _batches(inputs.training_stream(data, 3, 4, METHODS["class_weight"], seed=1, augmenter=None))
    assert not np.array_equal(x, data.images.astype(np.float32))
    order = [next(i for i in range(len(data)) if np.array_equal(img, data.images[i])) for img in x.astype(np.uint8)]
    assert sorted(order) == list(range(len(data)))
    np.testing.assert_array_equal(y.argmax(axis=1), data.labels[order])


def test_augmentation_changes_training_pixels_only_when_asked():
    params = load_params("params/default.yaml")
    data = _split_data(size=32)
    augmenter = augmentation.build_augmentation(params.augmentation, seed=0)
    x, _ = _batches(inputs.training_stream(data, 3, 4, METHODS["class_weight"], seed=1, augmenter=augmenter))
    assert x.shape == (10, 32, 32, 3)
    assert not np.allclose(np.sort(x, axis=0), np.sort(data.images.astype(np.float32), axis=0))
    plain = inputs.image_batches(data.images, 4)  # prediction: inputs only, in order, not augmented
    np.testing.assert_array_equal(np.concatenate([plain[i] for i in range(len(plain))]), data.images.astype(np.float32))


def test_a_class_missing_from_training_is_an_error():
    manifest = pd.DataFrame(
        {"path": ["a", "b", "c"], "label": ["x", "x", "y"], "split": ["train", "val", "test"]}
    )
    with pytest.raises(ValueError, match=r"class\(es\) \['y'\] appear in validation/test but not in training"):
        pixels.load_study_data(manifest, (8, 8))


@pytest.fixture
def prepared(prepare_experiment):
    return prepare_experiment("cnn", augmentation=False)


def _digests(array):
    return {hashlib.sha256(img.astype(np.uint8).tobytes()).hexdigest() for img in array}


def test_no_validation_or_test_image_reaches_training(prepared):
    data = prepared.data
    val_x, _ = _batches(prepared.val_ds)
    for method in (m for m in METHODS.values() if not m.mix_alpha):  # mixup serves blends of training images
        train_x, _ = _batches(prepared.training_stream(method))
        assert _digests(train_x) <= _digests(data.train.images)
        assert not _digests(train_x) & (_digests(data.val.images) | _digests(data.test.images))
    assert _digests(_batches(prepared.training_stream(METHODS["class_weight"]))[0]) == _digests(data.train.images)
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
    assert augmentation.build_augmentation(off, seed=0) is None
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    assert all(np.array_equal(view, image) for view in augmentation.augmented_views(image, None, 3))


def test_decoded_pixels_are_cached_by_file_list_and_size(tmp_path, image_folder, monkeypatch):
    paths = sorted(str(p) for p in image_folder.rglob("*.jpg"))
    cache = tmp_path / "interim"
    first = pixels.cached_pixels(paths, (16, 16), cache)
    assert len(list(cache.glob("pixels-16x16-*.npy"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(pixels, "decode_images", no_decoding)
    np.testing.assert_array_equal(pixels.cached_pixels(paths, (16, 16), cache), first)
    monkeypatch.undo()

    # another size is another entry, kept beside the first (two steps may use both); a changed file is another
    # key, whose entry replaces the stale one of that size
    assert pixels.cached_pixels(paths, (8, 8), cache).shape == (len(paths), 8, 8, 3)
    assert sorted(p.name.split("-")[1] for p in cache.glob("pixels-*.npy")) == ["16x16", "8x8"]
    key = pixels.pixel_cache_key(paths, (8, 8))
    Image.new("RGB", (10, 10), (255, 255, 255)).save(paths[0])
    assert pixels.pixel_cache_key(paths, (8, 8)) != key
    assert pixels.cached_pixels(paths, (8, 8), cache)[0].min() == 255
    assert sorted(p.name.split("-")[1] for p in cache.glob("pixels-*.npy")) == ["16x16", "8x8"]
    assert (image_folder / "alpha").is_dir()


def test_a_split_reads_its_rows_from_the_pixel_cache_as_the_in_memory_path_decodes_them(tmp_path):
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for number in range(5):
            Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(folder / label / f"{number}.png")
    records = sources.scan_class_folders(folder)
    manifest = records.assign(split=["train", "val", "train", "test", "train"] * 2).sample(frac=1, random_state=1)
    in_memory = pixels.load_study_data(manifest, (8, 8))
    from_cache = pixels.load_study_data(manifest, (8, 8), cache_dir=tmp_path / "interim")
    assert isinstance(from_cache.train.images, pixels.PixelRows)
    for split in ("train", "val", "test"):
        expected, lazy = getattr(in_memory, split).images, getattr(from_cache, split).images
        np.testing.assert_array_equal(np.asarray(lazy), expected)
        np.testing.assert_array_equal(lazy[[-1, 0]], expected[[-1, 0]])
        np.testing.assert_array_equal(lazy[1], expected[1])
    batches = inputs.evaluation_stream(from_cache.train, 2, 4)
    np.testing.assert_array_equal(np.concatenate([batches[i][0] for i in range(len(batches))]),
                                  in_memory.train.images.astype("float32"))


def _augmentation(**ranges) -> augmentation.Augmentation:
    """An `Augmentation` with every transform off except ``ranges``."""
    off = {"rotation_degrees": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0, "horizontal_flip": False}
    return augmentation.Augmentation(AugmentationParams(**(off | ranges)), seed=7)


def test_zero_augmentation_is_the_identity_and_a_flip_an_exact_mirror():
    images = _split_data(n=20, size=12).images
    np.testing.assert_array_equal(_augmentation()(images, epoch=0, batch=0), images.astype(np.float32))
    flipped = _augmentation(horizontal_flip=True)(images, epoch=0, batch=0)
    mirrored = [np.array_equal(out, image[:, ::-1]) for out, image in zip(flipped, images)]
    unchanged = [np.array_equal(out, image) for out, image in zip(flipped, images)]
    assert all(m != u for m, u in zip(mirrored, unchanged)), "each image is either mirrored or untouched"
    assert 0 < sum(mirrored) < len(images), "about half are mirrored"


def test_augmentation_draws_depend_on_seed_epoch_and_batch_only():
    images = _split_data(n=6, size=24).images
    study = augmentation.Augmentation(load_params("params/default.yaml").augmentation, seed=3)
    first = study(images, epoch=2, batch=5)
    assert first.dtype == np.float32 and first.shape == images.shape
    assert first.min() >= 0 and first.max() <= 255
    np.testing.assert_array_equal(study(images, epoch=2, batch=5), first)
    assert not np.array_equal(study(images, epoch=3, batch=5), first), "another epoch, other transforms"
    assert not np.array_equal(study(images, epoch=2, batch=6), first), "another batch, other transforms"
    other_seed = augmentation.Augmentation(study.params, seed=4)
    assert not np.array_equal(other_seed(images, epoch=2, batch=5), first)


def test_the_fill_extends_the_edges_so_no_black_corners_appear():
    rotate_and_zoom_out = _augmentation(rotation_degrees=180, zoom=0.5, width_shift=0.3, shear=0.3)
    grey = np.full((8, 16, 16, 3), 200, dtype=np.uint8)
    np.testing.assert_allclose(rotate_and_zoom_out(grey, epoch=0, batch=0), 200, atol=1e-3)
    rng = np.random.default_rng(0)
    pale = rng.integers(100, 201, size=(8, 16, 16, 3), dtype=np.uint8)
    out = rotate_and_zoom_out(pale, epoch=0, batch=0)
    assert out.min() >= 100 and out.max() <= 200, "every output pixel is interpolated from input pixels"
    assert not np.array_equal(out, pale.astype(np.float32))


def test_preview_views_are_uint8_images_transformed_differently():
    image = _split_data(n=1, size=24).images[0]
    views = augmentation.augmented_views(image, augmentation.build_augmentation(AugmentationParams(), seed=0), count=3)
    assert all(view.dtype == np.uint8 and view.shape == image.shape for view in views)
    assert not np.array_equal(views[0], views[1]) and not np.array_equal(views[0], image)


def _epochs(stream, count):
    """``count`` epochs of a stream, each begun after a batch of the previous one was read (as Keras' fit
    reads one to build the model before the first), and read in order."""
    epochs = []
    for _ in range(count):
        stream[0]
        stream.on_epoch_begin()
        epochs.append(_batches(stream))
    return epochs


@pytest.mark.parametrize("method", ["class_weight", "oversample"])
def test_worker_threads_serve_the_same_batches_as_the_training_loop_alone(method):
    data = _split_data(n=23, size=16)
    augmenter = augmentation.build_augmentation(AugmentationParams(), seed=0)
    alone = _epochs(inputs.training_stream(data, 3, 4, METHODS[method], 1, augmenter, threads=0), 3)
    for threads in (1, 3):
        threaded = _epochs(inputs.training_stream(data, 3, 4, METHODS[method], 1, augmenter, threads=threads), 3)
        for (x, y), (x_alone, y_alone) in zip(threaded, alone):
            np.testing.assert_array_equal(x, x_alone)
            np.testing.assert_array_equal(y, y_alone)
    assert not np.array_equal(alone[0][0], alone[1][0]), "each epoch draws afresh"


def _fitted(stream, validation=None, served=inputs.keras_input, **fit_arguments):
    """A small model fitted on ``stream`` (and ``validation``) for 3 epochs from seed 0, as
    `lib.training.train.fit_phase` fits (through ``served``, batches in the stream's own order): its predictions
    of the training images and its history."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(stream.inputs.shape[2:]), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(served(stream), validation_data=None if validation is None else served(validation),
                        epochs=3, verbose=0, shuffle=False, **fit_arguments)
    images = np.asarray(stream.inputs[0, np.arange(stream.inputs.shape[1])], dtype=np.float32)
    return model.predict(images, verbose=0), history.history


def test_fitting_with_worker_threads_gives_the_same_model_as_without():
    data = _split_data(n=40, size=8)
    augmenter = augmentation.build_augmentation(AugmentationParams(), seed=0)

    def fitted_predictions(threads):
        return _fitted(inputs.training_stream(data, 3, 4, METHODS["oversample"], 1, augmenter, threads=threads))[0]

    alone = fitted_predictions(0)
    np.testing.assert_array_equal(fitted_predictions(4), alone)
    np.testing.assert_array_equal(fitted_predictions(4), alone)


def test_keras_input_serves_the_same_epochs_as_the_stream_itself():
    import keras

    data = _split_data(n=23, size=16)
    augmenter = augmentation.build_augmentation(AugmentationParams(), seed=0)

    def stream():
        return inputs.training_stream(data, 3, 4, METHODS["oversample"], 1, augmenter, threads=1)

    served = inputs.keras_input(stream())
    if keras.backend.backend() != "tensorflow":
        assert isinstance(served, inputs.Batches), "other backends take the stream as it is"
        return
    import tensorflow as tf

    assert isinstance(served, tf.data.Dataset) and served.cardinality() == len(stream())
    assert served.options().autotune.enabled is False, "the cause of issue 27's waiting epochs"
    expected = _epochs(stream(), 3)
    for epoch, (x_expected, y_expected) in enumerate(expected):  # each pass over the dataset is the next epoch
        x, y = zip(*[(np.asarray(x), np.asarray(y)) for x, y in served])
        np.testing.assert_array_equal(np.concatenate(x), x_expected, err_msg=f"epoch {epoch}")
        np.testing.assert_array_equal(np.concatenate(y), y_expected, err_msg=f"epoch {epoch}")
    assert inputs.keras_input(data.images) is data.images, "anything but a stream is passed on as it is"


def test_fitting_through_keras_input_gives_the_model_keras_own_pydataset_path_gives():
    """As `lib.training.train.fit_phase` fits: the batches in the stream's own order (``shuffle=False``)."""
    data = _split_data(n=40, size=8)
    augmenter = augmentation.build_augmentation(AugmentationParams(), seed=0)

    def fitted(served):
        return _fitted(inputs.training_stream(data, 3, 4, METHODS["class_weight"], 1, augmenter, threads=1),
                       inputs.evaluation_stream(data, 3, 4), served, class_weight={0: 1.0, 1: 2.0, 2: 0.5})

    predictions, history = fitted(inputs.keras_input)
    expected_predictions, expected_history = fitted(lambda stream: stream)
    np.testing.assert_array_equal(predictions, expected_predictions)
    assert history == expected_history


def test_data_workers_auto_is_one_where_the_cpu_trains_and_one_per_cpu_up_to_eight_beside_an_accelerator():
    assert inputs.data_workers("auto", accelerator=False) == 1
    assert inputs.data_workers("auto", accelerator=True) == min(8, len(os.sched_getaffinity(0)))
    for accelerator in (False, True):  # a number is taken as it is
        assert inputs.data_workers(0, accelerator) == 0 and inputs.data_workers(12, accelerator) == 12
    assert load_params("params/default.yaml").training.data_workers == "auto"


def test_opencv_warps_on_one_thread_unless_its_own_setting_says_otherwise():
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)
        augmentation.one_opencv_thread_per_warp(environ={"OPENCV_FOR_THREADS_NUM": "3"})
        assert cv2.getNumThreads() == 3, "a user's OPENCV_FOR_THREADS_NUM wins"
        augmentation.one_opencv_thread_per_warp(environ={})
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_the_augmented_pixels_are_the_same_with_any_number_of_opencv_threads():
    images = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    augment = augmentation.Augmentation(AugmentationParams(), seed=3)
    before = cv2.getNumThreads()
    try:
        warped = []
        for threads in (1, 4):
            cv2.setNumThreads(threads)
            warped.append(augment(images, epoch=2, batch=5))
    finally:
        cv2.setNumThreads(before)
    np.testing.assert_array_equal(warped[0], warped[1])


@pytest.mark.parametrize("method", ["class_weight", "oversample", "mixup"])
def test_each_process_serves_its_share_of_the_global_batch_with_the_same_order_and_draws(method):
    """Across processes (`lib.core.distribution`): process 0's and process 1's shares, side by side, are the batch
    one process serves, augmented alike, epoch after epoch; mixup's blends are the whole batch's (a row's partner
    may be in the other share)."""
    data = _split_data(n=24, size=16)
    augmenter = augmentation.build_augmentation(AugmentationParams(), seed=0)
    whole = _epochs(inputs.training_stream(data, 3, 8, METHODS[method], 1, augmenter), 3)
    shares = [_epochs(inputs.training_stream(data, 3, 8, METHODS[method], 1, augmenter, shard=(index, 2)), 3)
              for index in (0, 1)]
    for epoch, (x, y) in enumerate(whole):
        (x0, y0), (x1, y1) = shares[0][epoch], shares[1][epoch]
        assert len(x0) == len(x1) == len(x) // 2
        for batch in range(3):  # batch b: rows 8b .. 8b + 7 of the epoch, 4 from each process
            rows = slice(8 * batch, 8 * batch + 8)
            halves = slice(4 * batch, 4 * batch + 4)
            np.testing.assert_array_equal(np.concatenate([x0[halves], x1[halves]]), x[rows])
            np.testing.assert_array_equal(np.concatenate([y0[halves], y1[halves]]), y[rows])


def test_a_short_batch_cannot_be_shared_between_processes():
    from lib.core.distribution import process_share

    assert process_share(slice(8, 16), 1, 2) == slice(12, 16)
    with pytest.raises(ValueError, match="a batch of 7 rows does not split evenly over 2 processes"):
        process_share(slice(0, 7), 0, 2)
