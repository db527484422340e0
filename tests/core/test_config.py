from pathlib import Path

import pytest

from lib.core.config import ParamsError, load_params, parse_params
from lib.core.paths import PROJECT_ROOT, run_paths


def test_default_params_file_is_the_replication_subset():
    params = load_params("params/default.yaml")
    grocery = params.data.grocery_store
    assert params.data.source == "grocery_store"
    assert grocery.classes == ["Apple", "Juice", "Yoghurt", "Milk", "Oat-Milk"]
    assert grocery.max_per_class == {"Oat-Milk": 14}
    assert params.data.image_size == (224, 224)
    assert (params.split.train, params.split.val, params.split.test) == (0.70, 0.15, 0.15)
    assert run_paths(params).round("seed-42").split_manifest == PROJECT_ROOT / "reports/default/rounds/seed-42/split.csv"
    assert params.evaluation.seeds == [42, 43, 44] and params.split.group_near_duplicates
    assert params.minority.methods == ["class_weight", "oversample", "logit_adjustment", "mixup"]


def test_every_bad_field_is_reported_in_one_error(tmp_path):
    bad = {
        "seed": "forty-two",
        "colour": "red",
        "split": {"train": 0.8, "val": 0.15, "test": 0.15},
        "augmentation": {"rotation_degrees": -5},
        "data": {"source": "folder", "directory": str(tmp_path / "nowhere")},
    }
    with pytest.raises(ParamsError) as raised:
        parse_params(bad, source="bad.yaml")
    message = str(raised.value)
    assert "5 invalid parameter(s)" in message
    assert "seed: Input should be a valid integer" in message
    assert "colour: unknown key" in message
    assert "split: train + val + test must sum to 1, got 1.1" in message
    assert "augmentation.rotation_degrees: Input should be greater than or equal to 0" in message
    assert "does not exist or is not a folder" in message


def test_folder_source_needs_a_directory():
    with pytest.raises(ParamsError, match="source 'folder' needs 'directory'"):
        parse_params({"data": {"source": "folder"}})


def test_relative_paths_are_relative_to_the_project_root(image_folder):
    relative = Path(*[".."] * len(PROJECT_ROOT.parts)) / image_folder.relative_to(image_folder.anchor)
    params = parse_params({"data": {"source": "folder", "directory": str(relative)}})
    assert params.data.directory == image_folder


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("seed: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(unsafe)


def test_a_missing_params_file_is_named(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml does not exist"):
        load_params(tmp_path / "nope.yaml")


def test_fingerprint_changes_with_any_value_but_the_reports_folder():
    # the order in which a file lists its fields does not matter; a nested value does
    assert (parse_params({"seed": 7, "cnn": {"dropout": 0.2, "kernel_size": 5}}).fingerprint()
            == parse_params({"cnn": {"kernel_size": 5, "dropout": 0.2}, "seed": 7}).fingerprint())
    assert parse_params({}).fingerprint() != parse_params({"cnn": {"training": {"epochs": 3}}}).fingerprint()
    assert parse_params({}).fingerprint() != parse_params({"seed": 7}).fingerprint()
    assert parse_params({}).fingerprint() != parse_params({"run_name": "other"}).fingerprint()
    assert parse_params({}).fingerprint() == parse_params({"reports_dir": "/elsewhere"}).fingerprint()
    assert "reports_dir" not in parse_params({}).study_values()


def test_a_nested_section_can_be_partly_overridden():
    params = parse_params({"cnn": {"training": {"epochs": 1}}, "mobilenet_v2": {"fine_tune": {"patience": 1}}})
    assert params.cnn.training.epochs == 1
    assert params.cnn.training.learning_rate == 1e-3 and params.cnn.training.patience == 5
    assert params.mobilenet_v2.fine_tune.patience == 1 and params.mobilenet_v2.fine_tune.learning_rate == 1e-5
    with pytest.raises(ParamsError, match=r"cnn.training.epochs: Input should be greater than or equal to 1"):
        parse_params({"cnn": {"training": {"epochs": -3}}})


def test_a_strong_protocol_fills_what_the_file_leaves_out_and_the_file_wins():
    original = parse_params({})
    assert original.mobilenet_v2.protocol == "original" and original.mobilenet_v2.fine_tune_layers == 20
    assert original.mobilenet_v2.fine_tune.schedule == "constant" and original.mobilenet_v2.fine_tune.weight_decay == 0

    strong = parse_params({"mobilenet_v2": {"protocol": "strong", "fine_tune": {"epochs": 12}}})
    tuned = strong.mobilenet_v2.fine_tune
    assert strong.mobilenet_v2.fine_tune_layers == "all"
    assert (tuned.epochs, tuned.learning_rate, tuned.schedule, tuned.warmup_epochs) == (12, 1e-4, "cosine", 2)
    assert tuned.label_smoothing == 0.1 and tuned.weight_decay == 0.01
    assert strong.mobilenet_v2.head == original.mobilenet_v2.head  # phase 1 is the original's
    assert strong.cnn == original.cnn  # each model's protocol is its own choice

    cnn = parse_params({"cnn": {"protocol": "strong", "training": {"label_smoothing": 0.0}}}).cnn.training
    assert cnn.schedule == "cosine" and cnn.label_smoothing == 0.0 and cnn.epochs == 25
    assert parse_params({"mobilenet_v2": {"protocol": "strong", "fine_tune_layers": 40}}).mobilenet_v2.fine_tune_layers == 40


def test_a_warm_up_must_end_within_the_epoch_budget():
    with pytest.raises(ParamsError, match=r"mobilenet_v2.fine_tune: .*warmup_epochs \(5\) must be fewer than epochs \(5\)"):
        parse_params({"mobilenet_v2": {"fine_tune": {"epochs": 5, "warmup_epochs": 5}}})
    with pytest.raises(ParamsError, match=r"mobilenet_v2.protocol"):
        parse_params({"mobilenet_v2": {"protocol": "stronger"}})


def test_the_report_subject_is_optional_and_validated(tmp_path):
    assert load_params("params/default.yaml").report.subject == "product photographs"
    assert parse_params({}).report.subject is None  # lib.report.data_prose.subject words it from the data
    assert parse_params({"report": {"subject": "  leaf scans "}}).report.subject == "leaf scans"
    for bad in ("", "x" * 61):
        with pytest.raises(ParamsError, match=r"report.subject: String should have"):
            parse_params({"report": {"subject": bad}}, source="mine.yaml")


def test_the_statistical_levels_are_params_within_their_range():
    evaluation = parse_params({"evaluation": {"confidence": 0.9, "alpha": 0.01}}).evaluation
    assert (evaluation.confidence, evaluation.alpha) == (0.9, 0.01)
    with pytest.raises(ParamsError, match=r"evaluation.confidence: Input should be less than 1"):
        parse_params({"evaluation": {"confidence": 1.0}})
    with pytest.raises(ParamsError, match=r"evaluation.alpha: Input should be greater than 0"):
        parse_params({"evaluation": {"alpha": 0}})
