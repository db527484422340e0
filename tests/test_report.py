"""The report's methods table says how each model was fed, from the run's own params."""

from lib.core.config import load_params, parse_params
from lib.report import document, references, tables
from lib.report import sections as report


def test_methods_table_says_what_the_activation_cache_means():
    cached = tables.methods_table(parse_params({"mobilenet_v2": {"augmented_views": 3}}))
    assert "3 fixed augmented views" in cached.loc["training inputs", "MobileNetV2"]
    assert "view e mod 3" in cached.loc["training inputs", "MobileNetV2"]
    plain = tables.methods_table(parse_params({"mobilenet_v2": {"activation_cache": False}}))
    assert "recomputed on every image in every epoch" in plain.loc["training inputs", "MobileNetV2"]
    assert plain.loc["training inputs", "Custom CNN"] == cached.loc["training inputs", "Custom CNN"]


def test_the_overfitting_verdict_follows_the_sign_and_size_of_the_gap():
    assert report.overfitting_verdict(12.0).startswith("overfits: ") and "by 12.0 points" in report.overfitting_verdict(12.0)
    assert report.overfitting_verdict(2.0).startswith("shows little overfitting")
    below = report.overfitting_verdict(-3.5)
    assert below.startswith("does not overfit") and "3.5 points above its training accuracy" in below


def test_methods_table_states_the_precision_each_model_trained_in():
    params = parse_params({"training": {"precision": "auto"}})
    table = tables.methods_table(params, {"Custom CNN": "mixed_bfloat16", "MobileNetV2": "float32"})
    assert table.loc["numeric precision", "Custom CNN"].startswith("mixed bfloat16")
    assert table.loc["numeric precision", "MobileNetV2"] == "float32 (training.precision: auto)"
    assert "numeric precision" not in tables.methods_table(params).index  # nothing recorded: no row


def test_the_method_paragraph_names_the_methods_that_were_compared():
    import pandas as pd

    def rows(methods):
        return pd.DataFrame([{"model": "Custom CNN", "method": m, "split": "val", "chosen": i == 0, "macro_f1": 0.9,
                              "minority_f1": 0.5, "minority_images": 2, "minority_class": "Oat-Milk"}
                             for i, m in enumerate(methods)])

    minority_params = parse_params({}).minority
    two = report.methods_html(rows(["oversample", "logit_adjustment"]), minority_params)
    assert two.startswith("<p>Two ways") and "oversampling" in two and "class weights" not in two
    assert "Custom CNN: oversample (validation macro-F1 0.900" in two
    assert "tau = 1, fixed in advance" in two and "rests on 2 validation images of <i>Oat-Milk</i>" in two
    tuned = report.methods_html(rows(["logit_adjustment"] * 1 + ["oversample"]),
                                parse_params({"minority": {"tau_grid": [0.0, 1.0]}}).minority)
    assert "tuned on validation (which favours it" in tuned
    one = report.methods_html(rows(["class_weight"]), minority_params)
    assert one.startswith("<p>One way") and "so no method was compared" in one


def test_the_method_table_puts_minority_precision_recall_and_f1_in_one_column_val_first():
    import pandas as pd

    methods = pd.DataFrame([
        {"model": "Custom CNN", "method": m, "split": split, "minority_images": 2, "minority_precision": 0.25,
         "minority_recall": 1.0, "minority_f1": 0.4, "macro_f1": 0.8, "balanced_accuracy": 0.9, "log_loss": 0.2,
         "tau": 0.0, "chosen": m == "oversample", "minority_class": "Oat-Milk"}
        for split in ("test", "val") for m in ("class_weight", "oversample")])
    table = tables.methods_report_table(methods)
    assert table.index.get_level_values("split").tolist() == ["val", "val", "test", "test"]
    assert table["minority P / R / F1"].iloc[0] == "0.25/1.00/0.40"
    assert table.loc[("Custom CNN", "oversample", "val"), "chosen"] == "yes"
    assert "minority F1" not in table.columns


AUDIT = {"images_usable": 31, "classes": {"big": 20, "mid": 10, "one": 1}}


def test_counts_are_written_in_the_right_number():
    assert document.count(1, "round") == "1 round" and document.count(3, "round") == "3 rounds"
    assert document.count(1, "class", "classes") == "1 class" and document.count(0, "class", "classes") == "0 classes"
    assert document.count(1830, "image") == "1,830 images"


def test_sentences_about_the_original_study_appear_only_in_the_replication(tmp_path):
    replication = load_params("params/default.yaml")
    folder = tmp_path / "my photos"
    folder.mkdir()
    own = parse_params({"data": {"source": "folder", "directory": str(folder)}, "split": {"group_near_duplicates": False},
                        "evaluation": {"seeds": [1]}})
    assert report.is_replication(replication) and not report.is_replication(own)
    other_classes = parse_params({"data": {"grocery_store": {"classes": ["Apple", "Juice"], "max_per_class": {}}}})
    assert not report.is_replication(parse_params({}))  # all of Grocery Store's coarse classes
    assert not report.is_replication(other_classes)

    original = report.introduction_html(replication, AUDIT)
    assert "1,909" in original and "14 images" in original and "keep near-duplicate photographs together" in original
    yours = report.introduction_html(own, AUDIT)
    assert "1,909" not in yours and "replicate" not in yours and "original" not in yours
    assert "the image folder “my photos”" in yours and "31 usable images in 3 classes" in yours
    assert "<i>one</i> (1 image)" in yours and "on one split (near-duplicate grouping switched off)" in yours
    assert "Klasson" in references.references_html(replication) and "Klasson" not in references.references_html(own)
    assert "Menon" in references.references_html(replication)
    assert "Menon" not in references.references_html(parse_params({"minority": {"methods": ["class_weight"]}}))


def test_class_names_with_control_characters_or_markup_show_as_text_in_prose_and_figures():
    import matplotlib.pyplot as plt
    import pandas as pd

    from lib.report import plots

    assert document.escape('Oat\tMilk <i>"x"\n') == "Oat\\tMilk &lt;i&gt;&quot;x&quot;\\n"
    counts = pd.Series({"Oat\tMilk": 3, "Yoghurt\nplain": 2, "Milk, 1 L": 1})
    figure = plots.class_counts_bar(counts)
    labels = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    plt.close(figure)
    assert labels == ["Oat\\tMilk", "Yoghurt\\nplain", "Milk, 1 L"]
    confusion = pd.DataFrame([[1, 0], [0, 1]], index=list(counts.index[:2]), columns=list(counts.index[:2]))
    figure = plots.confusion_side_by_side({"A": confusion})
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["Oat\\tMilk", "Yoghurt\\nplain"]
    plt.close(figure)


def test_figures_of_many_classes_fit_a_page_with_every_class_named():
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from lib.report import plots

    names = [f"class {i}" for i in range(81)]
    f1 = pd.DataFrame({"A": np.linspace(0, 1, 81), "B": np.linspace(1, 0, 81)}, index=pd.Index(names, name="class"))
    figure = plots.per_class_f1_bar(f1)
    width, height = figure.get_size_inches()
    assert width <= 8 and height <= 20
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == names
    plt.close(figure)
    counts = pd.DataFrame(np.eye(81, dtype=int), index=names, columns=names)
    figure = plots.confusion_side_by_side({"A": counts, "B": counts})
    assert max(figure.get_size_inches()) <= 16
    assert len(figure.axes[0].get_xticklabels()) == 81
    plt.close(figure)


def test_methods_table_names_each_models_protocol_and_its_schedule():
    original = tables.methods_table(parse_params({}))
    assert original.loc["protocol"].tolist() == [tables.PROTOCOL_WORDS["original"]] * 2
    assert "last 20 base layers" in original.loc["phase 2", "MobileNetV2"]
    assert "cosine" not in original.to_string() and "AdamW" not in original.to_string()

    strong = tables.methods_table(parse_params({"cnn": {"protocol": "strong"}, "mobilenet_v2": {"protocol": "strong"}}))
    assert strong.loc["protocol"].tolist() == [tables.PROTOCOL_WORDS["strong"]] * 2
    tuned = strong.loc["phase 2", "MobileNetV2"]
    assert tuned.startswith("whole base unfrozen") and "AdamW lr 0.0001 after a 2-epoch linear warm-up" in tuned
    assert "cosine decay" in tuned and "label smoothing 0.1" in tuned and "≤ 30 epochs, patience 6" in tuned
    assert "phase 2: the whole base trains on pixels" in strong.loc["training inputs", "MobileNetV2"]
    assert "cosine decay" in strong.loc["phase 1", "Custom CNN"]


def test_the_report_warns_about_the_probe_only_beyond_the_paired_interval_and_the_abstract_only_then():
    from test_probe_check import PARAMS, _checks, _crippled, _one_rare_image_wrong

    crippled = _checks(_crippled())
    words = report.probe_html(crippled, PARAMS)
    assert "Warning: the fine-tuned MobileNetV2 scores below a linear probe" in words and 'class="warning"' in words
    assert report.probe_abstract_sentence(crippled).startswith(" <b>In its one round, the fine-tuned MobileNetV2 scored")
    noise = _checks(_one_rare_image_wrong())
    words = report.probe_html(noise, PARAMS)
    assert "Warning" not in words and 'class="warning"' not in words and "within noise of the probe" in words
    assert report.probe_abstract_sentence(noise) == ""
