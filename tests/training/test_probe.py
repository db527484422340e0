"""The linear probe (`lib.training.probe`): its fit, its features, its files, its row in the comparison, and the
warning (`lib.analysis.probe_check`) through the notebooks."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import NO_AUGMENTATION, write_first_round_split, write_params
from made_results import CONFIDENCE, comparison_of, rounds_of
from PIL import Image

from lib.analysis import compare, probe_check
from lib.core.minority import METHODS, Postprocessing
from lib.core.provenance import set_seed
from lib.core.study import PROBE_NAME
from lib.report import sections as report
from lib.report import tables
from lib.training import evaluate, probe
from lib.training.activation_cache import ActivationCache, ReusedInputs
from lib.training.experiment import TrainedModel
from lib.training.models import build_mobilenet_v2

MOBILENET = {"weights": None, "dense_units": 8}


def _blobs(rng, counts, n_features=20, spread=0.5):
    """Features of len(counts) classes around different centres, and their labels."""
    centres = rng.normal(0, 3, (len(counts), n_features))
    labels = np.repeat(np.arange(len(counts)), counts)
    return centres[labels] + rng.normal(0, spread, (len(labels), n_features)), labels


def test_the_probe_separates_separable_features_and_weights_classes_as_the_method_does():
    rng = np.random.default_rng(0)
    features, labels = _blobs(rng, [60, 30, 6])
    assert probe.class_weight(METHODS["class_weight"]) == "balanced"
    assert probe.class_weight(METHODS["oversample"]) == "balanced"  # every class counts equally, as when oversampled
    assert probe.class_weight(METHODS["logit_adjustment"]) is None  # shifted afterwards instead
    for method in METHODS.values():
        fitted = probe.fit_probe(features, labels, method)
        assert fitted[-1].class_weight == probe.class_weight(method) and fitted[-1].C == probe.PROBE_C
        held_out, held_out_labels = features + rng.normal(0, 0.1, features.shape), labels
        assert (fitted.predict(held_out) == held_out_labels).mean() > 0.95
    # the rare class gains with 'balanced' weights: its mean probability is higher than without
    noisy, noisy_labels = _blobs(np.random.default_rng(1), [200, 10], spread=4.0)
    weighted = probe.fit_probe(noisy, noisy_labels, METHODS["class_weight"]).predict_proba(noisy)[:, 1].mean()
    plain = probe.fit_probe(noisy, noisy_labels, METHODS["logit_adjustment"]).predict_proba(noisy)[:, 1].mean()
    assert weighted > plain


def test_probabilities_have_a_column_for_every_class_even_one_the_probe_never_saw():
    features, labels = _blobs(np.random.default_rng(0), [10, 10, 10])
    fitted = probe.fit_probe(features[labels != 1], labels[labels != 1], METHODS["class_weight"])
    out = probe.probabilities(fitted, features, 3)
    assert out.shape == (30, 3) and np.all(out[:, 1] == 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


@pytest.fixture
def cached_experiment(prepare_experiment):
    """``(experiment, cache)``: a tiny round and the activation cache its MobileNetV2 trains on (random weights,
    built as `lib.training.experiment.train_each_method` builds the first model: right after the round's seed is set)."""
    def make(augmentation: bool):
        experiment = prepare_experiment("mobilenetv2", augmentation=augmentation, mobilenet_v2=MOBILENET)
        set_seed(experiment.round.seed)
        model, base = build_mobilenet_v2(experiment.n_classes, (32, 32), experiment.params.mobilenet_v2)
        return experiment, ActivationCache(experiment.round_inputs(), experiment.params.mobilenet_v2, model, base)

    return make


@pytest.mark.parametrize("augmentation", [True, False])
def test_frozen_features_reuse_what_the_cache_holds_for_clean_images_and_equal_a_fresh_extraction(
        cached_experiment, augmentation):
    experiment, cache = cached_experiment(augmentation)
    arguments = (experiment.data, experiment.params, experiment.round.seed)
    assert sorted(cache.clean_pooled()) == (["train", "val"] if not augmentation else ["val"])
    features = probe.frozen_features(*arguments, cache.clean_pooled())
    assert features["val"] is not None and np.shares_memory(features["val"], cache.val["pooled"])
    fresh = probe.frozen_features(*arguments, ReusedInputs({}).clean_pooled())
    for split in ("train", "val", "test"):
        assert features[split].shape == (len(getattr(experiment.data, split)), 1280)
        assert features[split].dtype == np.float32
        # random weights give tiny activations (about 1e-12): compared relative to their size
        scale = np.abs(fresh[split]).max()
        assert scale > 0
        np.testing.assert_allclose(features[split], fresh[split], rtol=1e-4, atol=1e-4 * scale)
    if augmentation:  # the cache's training views are augmented: the probe's are not
        scale = np.abs(features["train"]).max()
        assert not np.allclose(cache.train["pooled"][0], features["train"], rtol=1e-2, atol=1e-2 * scale)


def _chosen(experiment, val_predictions: np.ndarray, inputs) -> TrainedModel:
    """A stand-in for the round's fine-tuned model, trained on ``inputs``: its validation predictions are
    ``val_predictions``."""
    val_probabilities = np.eye(experiment.n_classes)[val_predictions]
    return TrainedModel("class_weight", None, pd.DataFrame(), {}, Postprocessing("class_weight"), val_probabilities,
                        inputs)


def test_compute_probe_writes_predictions_as_the_models_do_and_the_validation_check_read_probe_reads(
        cached_experiment):
    experiment, cache = cached_experiment(True)
    data, n = experiment.data, experiment.n_classes
    perfect = probe.compute_probe(experiment, _chosen(experiment, data.val.labels, cache))
    files = experiment.model_paths
    saved = pd.read_csv(files.probe_predictions, keep_default_na=False)
    expected_columns = list(evaluate.predictions_table(data.test.rows, data.test.labels,
                                                       np.eye(n)[data.test.labels], data.class_names).columns)
    assert list(saved.columns) == expected_columns
    assert sorted(saved["relpath"]) == sorted(data.test.rows["relpath"])
    metrics = json.loads(files.probe_metrics.read_text())
    assert metrics["model"] == PROBE_NAME and metrics["round"] == experiment.round.name
    assert metrics["accuracy"] == pytest.approx((saved["true_label"] == saved["predicted_label"]).mean())
    assert metrics["features_from_cache"] == ["val"] and metrics["classifier"]["class_weight"] == "balanced"
    check = metrics["validation"]
    assert check["metric"] == "macro_f1" and check["fine_tuned"] == 1.0 and 0 <= check["probe"] <= 1
    # both models' predicted class of every validation image, from which the comparison's check recomputes the scores
    validation = pd.read_csv(files.probe_validation, keep_default_na=False)
    pd.testing.assert_frame_equal(validation, perfect.validation)
    assert validation["relpath"].tolist() == data.val.rows["relpath"].tolist()
    assert (validation["fine_tuned"] == validation["true_label"]).all()
    row = probe_check.check_table({experiment.round.name: (metrics, validation)}, 0, CONFIDENCE, n_resamples=200).iloc[0]
    assert (row["fine_tuned"], row["probe"]) == pytest.approx((check["fine_tuned"], check["probe"]))
    assert not row["below_probe"], "a model right on every validation image is never below"

    wrong = probe.compute_probe(experiment, _chosen(experiment, (data.val.labels + 1) % n, cache))
    assert wrong.metrics["validation"]["fine_tuned"] == 0.0
    assert (wrong.validation["fine_tuned"] != wrong.validation["true_label"]).all()
    # the comparison reads the probe as a model of its own
    loaded = compare.load_probe(experiment.round_paths)
    assert loaded.name == PROBE_NAME and loaded.metrics == wrong.metrics and len(loaded.predictions) == len(data.test)
    read = probe.read_probe(experiment)  # what a notebook shown from the finished step gets back
    assert read.metrics == wrong.metrics
    pd.testing.assert_frame_equal(read.validation, wrong.validation)
    pd.testing.assert_frame_equal(read.predictions, wrong.predictions, check_dtype=False)


def _with_probe(rounds, probe_correct):
    """``rounds`` (`test_compare._rounds`) with a linear probe in each, right where ``probe_correct`` says."""
    out = {}
    for name, results in rounds.items():
        first = next(iter(results.values()))
        names, true = first.class_names, first.predictions["true_label"]
        wrong = true.map(lambda label: names[(names.index(label) + 1) % len(names)])
        predictions = first.predictions.assign(predicted_label=np.where(probe_correct, true, wrong))
        metrics = first.metrics | {"validation": {"metric": "macro_f1"}}
        out[name] = {**results, "probe": compare.ModelResults(PROBE_NAME, metrics, pd.DataFrame(), predictions)}
    return out


def test_the_probe_is_a_third_row_of_the_statistics_and_stays_out_of_the_paired_tests():
    a = np.ones(200, dtype=bool)
    b = np.r_[np.ones(120, dtype=bool), np.zeros(80, dtype=bool)]
    rounds = rounds_of((a, b), (a, np.roll(b, 7)))
    probed = _with_probe(rounds, np.r_[np.ones(100, dtype=bool), np.zeros(100, dtype=bool)])
    summary = compare.summary_across_rounds(probed, seed=0, confidence=CONFIDENCE, n_resamples=300)
    assert list(summary.index.get_level_values("model").unique()) == ["Model A", "Model B", PROBE_NAME]
    assert summary.loc[(PROBE_NAME, "accuracy"), "mean"] == pytest.approx(0.5)
    assert summary.loc[(PROBE_NAME, "accuracy"), "low"] < 0.5 < summary.loc[(PROBE_NAME, "accuracy"), "high"]
    two = compare.summary_across_rounds(rounds, seed=0, confidence=CONFIDENCE, n_resamples=300)
    tests = compare.paired_tests(rounds)
    comparison = comparison_of(rounds, summary, tests)
    assert comparison.verdict == comparison_of(rounds, two, tests).verdict, "the probe changes no verdict"
    per_round = compare.per_round_table(probed)
    assert list(per_round["model"].unique()) == ["Model A", "Model B", PROBE_NAME]
    assert list(compare.compared_models(per_round)["model"].unique()) == ["Model A", "Model B"]

    table = tables.statistics_table(summary)
    assert list(table.columns) == ["Model A", "Model B", PROBE_NAME]
    words = report.statistics_html(comparison, "holdout")
    assert "has a row of its own" in words and "takes no part in McNemar's tests" in words
    assert PROBE_NAME not in report.conclusion_html(comparison), "the conclusion compares the two models"


# --------------------------------------------------------------------------------------
# Through the notebooks: a fine-tuned model honestly below its probe, and one that is not
# --------------------------------------------------------------------------------------

PATTERNS = ("horizontal", "vertical", "checks", "diagonal")
WARNING = "Warning: the fine-tuned MobileNetV2 scores below a linear probe on its own frozen ImageNet features"


def pattern_image(rng: np.random.Generator, kind: str, size: int = 64) -> Image.Image:
    """Stripes (horizontal, vertical, diagonal) or checks of a random period, phase and pair of colours.

    ImageNet features tell these apart at 64 px (a logistic regression on them classifies every held-out
    image right); plain colour classes would not do: at small sizes the frozen features barely see hue.
    """
    period = int(rng.integers(8, 17))
    phase = int(rng.integers(0, period))
    first, second = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.abs(first.astype(int) - second).sum() < 200:  # two colours that differ
        second = rng.integers(0, 256, 3)
    y, x = np.mgrid[:size, :size]
    on = {"horizontal": (y + phase) % period < period // 2, "vertical": (x + phase) % period < period // 2,
          "checks": ((x + phase) % period < period // 2) ^ ((y + phase) % period < period // 2),
          "diagonal": (x + y + phase) % period < period // 2}[kind]
    pixels = np.where(on[..., None], first, second) + rng.integers(-15, 16, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _study_params(root, run_name: str, mobilenet_v2: dict, **sections) -> dict:
    """One round, one minority-class method, four pattern classes at 64 px: a small study that trains both
    models."""
    folder = root / "images"
    rng = np.random.default_rng(0)
    for kind in PATTERNS:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for number in range(14):
            pattern_image(rng, kind).save(folder / kind / f"img_{number:03d}.png")
    return {"run_name": run_name, "reports_dir": str(root / "reports"),
            "data": {"source": "folder", "directory": str(folder), "image_size": [64, 64]},
            "split": {"group_near_duplicates": False},  # every image of a class is alike by design
            "audit": {"samples_per_class": 2}, "evaluation": {"seeds": [5]},
            "minority": {"methods": ["class_weight"]},
            "training": {"batch_size": 8, "precision": "float32"},
            "cnn": {"training": {"epochs": 1}}, "mobilenet_v2": mobilenet_v2, **sections}


def _printed(notebook_file) -> str:
    """Everything an executed notebook printed or displayed as text."""
    import nbformat

    cells = nbformat.read(notebook_file, as_version=4).cells
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                   for c in cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_a_crippled_fine_tuning_below_its_probe_is_named_in_the_notebook_and_the_report(tmp_path):
    """Four pattern classes, which the frozen ImageNet features separate, and a MobileNetV2 whose head and
    fine-tuning get one epoch at a learning rate of 1e-6: its head stays as initialised, so it cannot do what a
    logistic regression on the same features does. The run must say so in 03 and in the report."""
    from lib import run
    from lib.core.paths import RunPaths

    crippled = {"head": {"learning_rate": 1e-6, "epochs": 1, "patience": 1},
                "fine_tune": {"learning_rate": 1e-6, "epochs": 1, "patience": 1}}
    params_file = write_params(tmp_path / "crippled.yaml", _study_params(tmp_path, "crippled", crippled))
    run.run_study(params_file)
    paths = RunPaths(tmp_path / "reports" / "crippled")

    checks = pd.read_csv(paths.comparison_table("probe_check"), index_col="round")
    assert checks.loc["seed-5", "probe"] > checks.loc["seed-5", "fine_tuned"], "the built case: below its probe"
    assert bool(checks.loc["seed-5", "below_probe"]) and checks.loc["seed-5", "low"] > 0, "beyond the paired interval"
    printed = _printed(paths.round("seed-5").notebooks_dir / "03_mobilenetv2.ipynb")
    assert WARNING in printed and "learning rates (head 1e-06" in printed and "64 × 64 px, far from" in printed
    html = paths.report_html.read_text()
    assert WARNING in html and '<p class="warning">' in html
    assert "the fine-tuned MobileNetV2 scored below a linear probe" in html  # the abstract says so too
    summary = pd.read_csv(paths.comparison_table("summary"))
    assert list(summary["model"].unique()) == ["Custom CNN", "MobileNetV2", PROBE_NAME]
    assert f"<th>{PROBE_NAME}</th>" in html, "the statistics table has the probe's column"


@pytest.mark.slow
def test_a_fine_tuning_that_clears_its_probe_gets_no_warning(tmp_path):
    """The same data with a head that trains (ten epochs at 1e-3, no augmentation): the fine-tuned model
    classifies the validation images at least as well as its probe, and the MobileNetV2 notebook says that."""
    from lib import run
    from lib.core.config import load_params
    from lib.core.paths import run_paths
    from lib.data.rounds import evaluation_rounds
    from lib.pipeline import job

    healthy = {"head": {"learning_rate": 1e-3, "epochs": 10, "patience": 3},
               "fine_tune": {"learning_rate": 1e-5, "epochs": 1, "patience": 1}}
    values = _study_params(tmp_path, "healthy", healthy, augmentation=NO_AUGMENTATION)
    params = load_params(write_params(tmp_path / "healthy.yaml", values))
    write_first_round_split(params)
    rounds = evaluation_rounds(params.evaluation)
    planned = run.PlannedStep(next(s for s in run.STEPS if s.model == "mobilenetv2"), rounds, rounds.first)
    executed = job.execute_step(planned, tmp_path / "healthy.yaml", run_paths(params))

    check = json.loads(run_paths(params).round(rounds.first.name).model("mobilenetv2").probe_metrics.read_text())
    assert check["validation"]["fine_tuned"] >= check["validation"]["probe"]
    assert check["features_from_cache"] == ["train", "val"]  # un-augmented training views: none computed twice
    printed = _printed(executed)
    assert WARNING not in printed
    assert "On the validation split, the fine-tuned MobileNetV2 is compared with a linear probe" in printed
