"""The report's methods table says how each model was fed, from the run's own params."""

import pandas as pd
import pytest

from lib.core.config import load_params, parse_params
from lib.report import data_prose, document, references, tables
from lib.report import sections as report


def test_protocol_table_says_what_the_activation_cache_means():
    cached = tables.protocol_table(parse_params({"mobilenet_v2": {"augmented_views": 3}}))
    assert "3 fixed augmented views" in cached.loc["training inputs", "MobileNetV2"]
    assert "view e mod 3" in cached.loc["training inputs", "MobileNetV2"]
    plain = tables.protocol_table(parse_params({"mobilenet_v2": {"activation_cache": False}}))
    assert "recomputed on every image in every epoch" in plain.loc["training inputs", "MobileNetV2"]
    assert plain.loc["training inputs", "Custom CNN"] == cached.loc["training inputs", "Custom CNN"]


def test_the_overfitting_verdict_follows_the_sign_and_size_of_the_gap():
    assert report.overfitting_verdict(12.0).startswith("overfits: ") and "by 12.0 points" in report.overfitting_verdict(12.0)
    assert report.overfitting_verdict(2.0).startswith("shows little overfitting")
    below = report.overfitting_verdict(-3.5)
    assert below.startswith("does not overfit") and "3.5 points above its training accuracy" in below


def test_protocol_table_states_the_precision_each_model_trained_in():
    params = parse_params({"training": {"precision": "auto"}})
    table = tables.protocol_table(params, {"Custom CNN": "mixed_bfloat16", "MobileNetV2": "float32"})
    assert table.loc["numeric precision", "Custom CNN"].startswith("mixed bfloat16")
    assert table.loc["numeric precision", "MobileNetV2"] == "float32 (training.precision: auto)"
    assert "numeric precision" not in tables.protocol_table(params).index  # nothing recorded: no row


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
    assert data_prose.is_replication(replication) and not data_prose.is_replication(own)
    other_classes = parse_params({"data": {"grocery_store": {"classes": ["Apple", "Juice"], "max_per_class": {}}}})
    assert not data_prose.is_replication(parse_params({}))  # all of Grocery Store's coarse classes
    assert not data_prose.is_replication(other_classes)

    original = data_prose.introduction_html(replication, AUDIT)
    assert "1,909" in original and "14 images" in original and "several splits that keep near-duplicate images together" in original
    yours = data_prose.introduction_html(own, AUDIT)
    assert "1,909" not in yours and "replicate" not in yours and "original" not in yours
    assert "the image folder “my photos”" in yours and "31 usable images in 3 classes" in yours
    assert "from <i>big</i> (20 images) down to <i>one</i> (1 image)" in yours
    assert "on one split (near-duplicate grouping switched off)" in yours
    assert "ways to classify images on" in yours and "product" not in yours
    assert "Klasson" in references.references_html(replication) and "Klasson" not in references.references_html(own)
    assert "Menon" in references.references_html(replication)
    assert "Menon" not in references.references_html(parse_params({"minority": {"methods": ["class_weight"]}}))
    assert "mixup" in references.references_html(replication)  # params/default.yaml compares it
    assert "mixup" not in references.references_html(parse_params({"minority": {"methods": ["class_weight"]}}))


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


def test_protocol_table_names_each_models_protocol_and_its_schedule():
    original = tables.protocol_table(parse_params({}))
    assert original.loc["protocol"].tolist() == [tables.PROTOCOL_WORDS["original"]] * 2
    assert "last 20 base layers" in original.loc["phase 2", "MobileNetV2"]
    assert "cosine" not in original.to_string() and "AdamW" not in original.to_string()

    strong = tables.protocol_table(parse_params({"cnn": {"protocol": "strong"}, "mobilenet_v2": {"protocol": "strong"}}))
    assert strong.loc["protocol"].tolist() == [tables.PROTOCOL_WORDS["strong"]] * 2
    tuned = strong.loc["phase 2", "MobileNetV2"]
    assert tuned.startswith("whole base unfrozen") and "AdamW lr 0.0001 after a 2-epoch linear warm-up" in tuned
    assert "cosine decay" in tuned and "label smoothing 0.1" in tuned and "≤ 30 epochs, patience 6" in tuned
    assert "phase 2: the whole base trains on pixels" in strong.loc["training inputs", "MobileNetV2"]
    assert "cosine decay" in strong.loc["phase 1", "Custom CNN"]


def test_the_step_table_gives_a_model_steps_median_and_slowest_epoch_per_phase():
    steps = {"01_data_audit.ipynb": {"seconds": 40.0, "reused": False, "peak_rss_gib": 1.0},
             "rounds/seed-42/02_cnn.ipynb": {"seconds": 300.0, "reused": True, "peak_rss_gib": 2.0,
                                             "epoch_seconds": {"training": {"epochs": 25, "median": 10.5,
                                                                            "slowest": 20.7}}}}
    table = tables.steps_table(steps)
    epochs = table["epochs: count, median / slowest (s)"]
    assert epochs["01_data_audit.ipynb"] == ""
    assert epochs["rounds/seed-42/02_cnn.ipynb"] == "training 25: 10.5 / 20.7"
    assert table.loc["rounds/seed-42/02_cnn.ipynb", "this run"] == "reused"


def test_the_report_warns_about_the_probe_only_beyond_the_paired_interval_and_the_abstract_only_then():
    from made_results import PARAMS, checks_of, crippled_validation, one_rare_image_wrong

    crippled = checks_of(crippled_validation())
    words = report.probe_html(crippled, PARAMS)
    assert "Warning: the fine-tuned MobileNetV2 scores below a linear probe" in words and 'class="warning"' in words
    assert report.probe_abstract_sentence(crippled).startswith(" <b>In its one round, the fine-tuned MobileNetV2 scored")
    noise = checks_of(one_rare_image_wrong())
    words = report.probe_html(noise, PARAMS)
    assert "Warning" not in words and 'class="warning"' not in words and "within noise of the probe" in words
    assert report.probe_abstract_sentence(noise) == ""


def _balanced_audit(per_class=40, classes=("cats", "dogs")) -> dict:
    """An audit summary (`lib.data.audit`) of a balanced folder, one round, no duplicates."""
    leaks = [{"test images with a training near-duplicate (plain)": 0, "test images with a training near-duplicate (used)": 0}]
    return {"images_usable": per_class * len(classes), "files_examined": per_class * len(classes), "files_excluded": 0,
            "classes": dict.fromkeys(classes, per_class), "imbalance_ratio": 1.0,
            "split_sizes": {"train": 56, "val": 12, "test": 12}, "exact_duplicate_pairs": 0,
            "exact_duplicate_pairs_across_splits": 0, "near_duplicate_pairs": 1, "near_duplicate_pairs_across_splits": 0,
            "test_images_with_a_train_duplicate": 1, "leaks_by_round": leaks, "group_near_duplicates": True,
            "thresholds": {"feature_min_similarity": 0.9, "phash_max_distance": 8}, "feature_duplicate_pairs": 1,
            "near_duplicate_groups": 79, "largest_group": 2}


def test_prose_on_a_balanced_two_class_folder_in_one_round_fits_the_data(tmp_path):
    folder = tmp_path / "pets"
    folder.mkdir()
    params = parse_params({"data": {"source": "folder", "directory": str(folder)}, "evaluation": {"seeds": [1]}})
    audit = _balanced_audit()
    assert data_prose.subject(params) == "images" and data_prose.subject(load_params("params/default.yaml")) == \
        "product photographs"
    assert data_prose.subject(parse_params({"report": {"subject": "leaf scans"}})) == "leaf scans"
    intro = data_prose.introduction_html(params, audit)
    assert "ways to classify images on the data" in intro and "80 usable images in 2 classes, balanced, 40 images each" in intro
    assert "down to" not in intro and "on one split that keeps near-duplicate images together" in intro
    data = data_prose.data_html(audit, (64, 64))
    assert "Every class has 40 images: the classes are balanced." in data and "imbalance" not in data
    assert "1 test image of the first round has a near-duplicate" in data and "79 groups, the largest of 2 images" in data
    assert data_prose.class_sizes_clause(audit) == "of 40 images each"
    assert data_prose.class_sizes_clause(audit | {"classes": {"a": 40, "b": 35}}) == "of 35 to 40 images each"
    assert data_prose.class_sizes_clause(AUDIT) == "whose smallest class, <i>one</i>, has only 1 image"


def test_the_abstract_names_the_subject_and_the_smallest_class_only_when_the_classes_are_imbalanced():
    import numpy as np
    from made_results import comparison_of, rounds_of

    rounds = rounds_of((np.ones(30, dtype=bool), np.r_[np.ones(20, dtype=bool), np.zeros(10, dtype=bool)]))
    comparison = comparison_of(rounds)
    comparison.first_round = pd.DataFrame({"Model A": [10], "Model B": [20]}, index=["trainable parameters"])
    audit = _balanced_audit(classes=("c0", "c1", "c2"))
    words = report.abstract_html(audit, comparison, replication=False, grouped=True, subject="images")
    assert "for classifying images, on 120 images in 3 classes of 40 images each. In one evaluation round," in words
    assert "reaches a macro-F1 of" in words and "smallest class" not in words and "only" not in words
    assert "Splits keep near-duplicate images together (0 test images with a near-duplicate in training remain)" in words
    imbalanced = report.abstract_html(audit | {"classes": {"c0": 40, "c1": 40, "c2": 10}}, comparison, False, True,
                                      "product photographs")
    assert "whose smallest class, <i>c2</i>, has only 10 images" in imbalanced and "On the smallest class the F1" in imbalanced


def test_tables_have_one_header_row_the_index_name_in_its_first_cell():
    table = pd.DataFrame({"A": [1.0], "B": [2.0]}, index=pd.Index(["accuracy"], name="metric"))
    html = document.Document().table(table, "caption")
    assert html.count("<tr") == 2 and "<th>metric</th>" in html  # the header row and the one body row
    agreement = pd.DataFrame([[3, 1], [2, 0]], index=pd.Index(["right", "wrong"], name="CNN"),
                             columns=pd.Index(["right", "wrong"], name="MobileNetV2"))
    assert document.Document().table(agreement, "c").count("<tr") == 3 and "CNN \\ MobileNetV2" in \
        document.Document().table(agreement, "c")
    methods = pd.DataFrame({"score": [1.0, 2.0]}, index=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")],
                                                                                  names=["model", "method"]))
    html = document.Document().table(methods, "c")
    assert html.count("<tr") == 3 and "<th>model</th>" in html and "<th>method</th>" in html


def test_the_step_table_says_which_steps_ran_and_which_were_reused():
    steps = tables.steps_table({"01_data_audit.ipynb": {"seconds": 5.0, "peak_rss_gib": 1.0, "reused": True},
                                "05_report.ipynb": {"seconds": 2.0, "peak_rss_gib": 0.5, "reused": False}})
    assert steps["this run"].tolist() == ["reused", "ran"]


def test_the_parameters_appendix_keeps_its_line_breaks_in_html_and_pdf(tmp_path):
    import nbformat
    import yaml

    from lib.report import render

    params = parse_params({"data": {"grocery_store": {"classes": ["Oat\tMilk", "Yog\nhurt", "<b>x</b>"]}}})
    block = document.preformatted(tables.params_yaml(params))
    assert yaml.safe_load(tables.params_yaml(params)) == params.to_dict(), "the YAML reads back as the params"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
        "display_data", data={"text/html": f"<p>Parameters of this run:</p>{block}"})])])
    nbformat.write(notebook, tmp_path / "report.ipynb")
    html = render.render_html(tmp_path / "report.ipynb", "t")
    shown = html[html.index("<pre>") + 5:html.index("</pre>")]
    lines = shown.split("\n")
    assert lines[:4] == ["run_name: default", f"reports_dir: {params.reports_dir}", "scratch_runs_kept: 3", "seed: 42"]
    assert "\\n" not in shown.replace("Yog\\nhurt", ""), "no line break written as an escape"
    assert '    classes: ["Oat\\tMilk", "Yog\\nhurt", &lt;b&gt;x&lt;/b&gt;]' in lines  # visible, on one line
    assert "  seeds: [42, 43, 44]" in lines
    weasyprint = pytest.importorskip("weasyprint")
    try:
        pages = weasyprint.HTML(string=html).render().pages
    except OSError as error:  # WeasyPrint without the system's Pango
        pytest.skip(f"WeasyPrint cannot lay out pages here: {error}")
    # The PDF's layout: at least one line box of the <pre> per YAML line (over the pages it spans; a long line may
    # wrap), where the block folded into one line would wrap into far fewer.
    from weasyprint.formatting_structure.boxes import LineBox

    printed = [box for page in pages for box in page._page_box.descendants()
               if isinstance(box, LineBox) and box.element_tag == "pre"]
    assert len(printed) >= len(shown.rstrip("\n").split("\n"))


def test_parameter_counts_and_mcnemars_columns_are_in_words():
    counts = tables.parameters_table({"Custom CNN": {"total": 683458, "trainable": 683458, "non_trainable": 0},
                                      "MobileNetV2": {"total": 2422210, "trainable_phase1": 164226}})
    assert counts.loc["total"].tolist() == ["683,458", "2,422,210"]
    assert counts.loc["trainable in phase 1"].tolist() == ["–", "164,226"] and "not trainable" in counts.index
    mcnemar = pd.DataFrame({"first": ["A", "A"], "second": ["B", "B"], "only_a": [2, 3], "only_b": [0, 1],
                            "p_value": [0.5, 0.625]}, index=pd.Index(["seed-1", "seed-2"], name="round"))
    table = tables.mcnemar_table(mcnemar)
    assert list(table.columns) == ["right only for A", "right only for B", "p (two-sided)"]
    assert table["p (two-sided)"].dtype == float and table.index.name == "round"


def test_a_figure_taller_than_a_page_shrinks_to_fit_one_page_keeping_its_shape():
    import matplotlib.pyplot as plt

    from lib.report import render

    weasyprint = pytest.importorskip("weasyprint")
    import base64
    import io

    from PIL import Image

    figure = plt.figure(figsize=(4, 20), dpi=50)  # the class counts of 81 classes: a tall bar chart
    figure.add_subplot().barh(range(81), range(81))
    block = document.Document().figure(figure, "tall", width="70%")
    png = Image.open(io.BytesIO(base64.b64decode(block.split("base64,")[1].split('"')[0])))
    html = f"<html><head><style>{render.STYLE.read_text()}</style></head><body>{block}</body></html>"
    try:
        pages = weasyprint.HTML(string=html).render().pages
    except OSError as error:
        pytest.skip(f"WeasyPrint cannot lay out pages here: {error}")
    assert len(pages) == 1, "the figure and its caption on one page"
    image = next(box for box in pages[0]._page_box.descendants() if getattr(box, "element_tag", None) == "img")
    assert image.height <= pages[0]._page_box.height, "inside the page's content area"
    assert image.height / image.width == pytest.approx(png.height / png.width, rel=0.01)


def test_the_method_paragraph_calls_no_class_rare_when_the_classes_are_balanced():
    methods = pd.DataFrame([{"model": "Custom CNN", "method": "class_weight", "split": "val", "chosen": True,
                             "macro_f1": 0.9, "minority_f1": 0.5, "minority_images": 6, "minority_class": "cats"}])
    minority_params = parse_params({}).minority
    assert "the rare class <i>cats</i>" in report.methods_html(methods, minority_params)
    balanced = report.methods_html(methods, minority_params, balanced=True)
    assert "the rare class" not in balanced and "none here: the classes are balanced" in balanced
