"""The academic report: numbered figures and tables, sentences generated from the run's numbers, rendering.

The report notebook (``notebooks/05_report.ipynb``) calls the ``*_html`` functions here,
each of which turns the artefacts of the run into a section's text; nothing about
results is typed by hand, so another dataset gets a correct report. Every value that
comes from the data (class names, file names) is HTML-escaped: a class folder called
``<b>x</b>`` shows as that text. `render` then turns the executed notebook into HTML
without any code, and the HTML into a PDF with WeasyPrint.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import yaml

from lib.compare import ModelResults, difference_is_significant, overfitting_gap, trainable_parameters

STYLE = Path(__file__).with_name("report.css")


# --------------------------------------------------------------------------------------
# Numbered figures and tables
# --------------------------------------------------------------------------------------


class Document:
    """Hands out figure and table numbers, and turns figures and tables into captioned HTML."""

    def __init__(self) -> None:
        self.figures = 0
        self.tables = 0

    def figure(self, fig: plt.Figure, caption: str, width: str = "100%") -> str:
        """The figure as an embedded PNG with "Figure N." and its caption (the figure is closed)."""
        self.figures += 1
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode()
        return (
            f'<figure><img src="data:image/png;base64,{data}" style="width:{width}" alt="Figure {self.figures}"/>'
            f"<figcaption><b>Figure {self.figures}.</b> {caption}</figcaption></figure>"
        )

    def table(self, table: pd.DataFrame, caption: str, float_format: str = "{:.3f}", index: bool = True) -> str:
        """The table with "Table N." and its caption above it; cell values are escaped."""
        self.tables += 1
        body = table.to_html(
            escape=True, index=index, border=0, float_format=float_format.format, classes="data", na_rep="–"
        )
        return f'<div class="table"><p class="caption"><b>Table {self.tables}.</b> {caption}</p>{body}</div>'


# --------------------------------------------------------------------------------------
# Words that follow the numbers
# --------------------------------------------------------------------------------------


def formatted(table: pd.DataFrame, count_rows=(), decimals: int = 3) -> pd.DataFrame:
    """Each row as text: the ``count_rows`` with thousands separators, the others with ``decimals``."""
    def row_format(row: pd.Series) -> pd.Series:
        pattern = "{:,.0f}" if row.name in count_rows else f"{{:.{decimals}f}}"
        return pd.to_numeric(row).map(pattern.format)

    return table.apply(row_format, axis=1)


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def compare_words(a: float, b: float, higher: str = "higher", lower: str = "lower", same: str = "the same") -> str:
    """'higher', 'lower' or 'the same' for a against b (at the precision the report prints)."""
    if round(a, 3) == round(b, 3):
        return same
    return higher if a > b else lower


def smallest_class(audit: dict) -> tuple[str, int]:
    counts = audit["classes"]
    name = min(counts, key=counts.get)
    return name, counts[name]


def _ranked(results: dict[str, ModelResults], key: str = "macro_f1") -> list[ModelResults]:
    return sorted(results.values(), key=lambda r: r.metrics[key], reverse=True)


def abstract_html(audit: dict, results: dict[str, ModelResults]) -> str:
    small, small_n = smallest_class(audit)
    best, other = _ranked(results)
    b, o = best.metrics, other.metrics
    return (
        "<p>We compare a convolutional network trained from scratch with MobileNetV2 transfer learning for "
        f"classifying product photographs, on {audit['images_usable']:,} images in {len(audit['classes'])} classes "
        f"whose smallest class, <i>{escape(small)}</i>, has only {small_n} images. "
        f"On a held-out test split of {b['test_images']} images, {escape(best.name)} reaches a macro-F1 of "
        f"{b['macro_f1']:.3f} and an accuracy of {pct(b['accuracy'])}, against {o['macro_f1']:.3f} and "
        f"{pct(o['accuracy'])} for {escape(other.name)}, while training {trainable_parameters(b):,} parameters against "
        f"{trainable_parameters(o):,}. On the smallest class, {escape(best.name)} scores an F1 of "
        f"{b['per_class'][small]['f1']:.2f} and {escape(other.name)} {o['per_class'][small]['f1']:.2f}. "
        "The split is drawn once, stratified, before any training, and no test image reaches training.</p>"
    )


def data_html(audit: dict, image_size: tuple[int, int]) -> str:
    small, small_n = smallest_class(audit)
    large = max(audit["classes"], key=audit["classes"].get)
    sizes = audit["split_sizes"]
    excluded = audit["files_excluded"]
    return (
        f"<p>The audit examined {audit['files_examined']:,} files and kept {audit['images_usable']:,} images "
        f"({excluded} excluded as unreadable or not images). The largest class, <i>{escape(large)}</i>, has "
        f"{audit['classes'][large]:,} images and the smallest, <i>{escape(small)}</i>, {small_n}: an imbalance "
        f"ratio of {audit['imbalance_ratio']:.1f} to 1. A stratified split, drawn once with a fixed seed, "
        f"gives {sizes.get('train', 0):,} training, {sizes.get('val', 0):,} validation and "
        f"{sizes.get('test', 0):,} test images. All images are resized to {image_size[0]} × {image_size[1]} "
        f"pixels.</p><p>Exact duplicates (identical bytes): {audit['exact_duplicate_pairs']} pair(s), "
        f"{audit['exact_duplicate_pairs_across_splits']} of them across splits. Near-duplicates (perceptual "
        f"hashes within the audit's threshold): {audit['near_duplicate_pairs']} pair(s), "
        f"{audit['near_duplicate_pairs_across_splits']} across splits; "
        f"{audit['test_images_with_a_train_duplicate']} test image(s) have a near-duplicate in training.</p>"
    )


def methods_table(params) -> pd.DataFrame:
    """The training protocol actually used, both models side by side."""
    cnn, mob, tr, aug = params.cnn, params.mobilenet_v2, params.training, params.augmentation
    rows = {
        "input": (f"{params.data.image_size[0]}×{params.data.image_size[1]} RGB, scaled to [0, 1]",
                  f"{params.data.image_size[0]}×{params.data.image_size[1]} RGB, scaled to [-1, 1]"),
        "architecture": (
            " → ".join(f"Conv{cnn.kernel_size}×{cnn.kernel_size}({f})+MaxPool" for f in cnn.conv_filters)
            + f" → Dense({cnn.dense_units}) → Dropout({cnn.dropout})",
            f"MobileNetV2 ({mob.weights or 'random'} weights) → GAP → Dense({mob.dense_units}) → Dropout({mob.dropout})",
        ),
        "phase 1": (
            f"Adam lr {cnn.training.learning_rate:g}, ≤ {cnn.training.epochs} epochs, patience {cnn.training.patience}",
            f"base frozen; Adam lr {mob.head.learning_rate:g}, ≤ {mob.head.epochs} epochs, patience {mob.head.patience}",
        ),
        "phase 2": (
            "–",
            f"last {mob.fine_tune_layers} base layers unfrozen (BatchNorm frozen); Adam lr "
            f"{mob.fine_tune.learning_rate:g}, ≤ {mob.fine_tune.epochs} epochs, patience {mob.fine_tune.patience}",
        ),
    }
    if mob.activation_cache:
        views = mob.augmented_views
        cached = (
            f"frozen layers run once per input, not every epoch: each training image enters as {views} fixed "
            f"augmented view(s), epoch e training on view e mod {views} (validation and test images, not "
            "augmented, are computed exactly as without the cache)"
        )
    else:
        cached = "frozen layers recomputed on every image in every epoch; new random augmentation every epoch"
    rows["training inputs"] = ("images decoded once; new random augmentation every epoch", cached)
    shared = (
        f"batch {tr.batch_size}; class weights: {tr.class_weight}; early stopping on val_loss, best epoch kept; "
        f"augmentation: rotation ±{aug.rotation_degrees:g}°, shifts {aug.width_shift:g}/{aug.height_shift:g}, "
        f"shear {aug.shear:g}, zoom {aug.zoom:g}, horizontal flip {'on' if aug.horizontal_flip else 'off'}"
    )
    rows["both"] = (shared, shared)
    return pd.DataFrame(rows, index=["Custom CNN", "MobileNetV2"]).T


def interval_table(ci: pd.DataFrame) -> pd.DataFrame:
    """One column per metric, each cell "value [low, high]": narrow enough for a printed page."""
    metrics = [c for c in ci.columns if not c.endswith((" low", " high"))]
    return pd.DataFrame(
        {m: [f"{row[m]:.3f} [{row[m + ' low']:.3f}, {row[m + ' high']:.3f}]" for _, row in ci.iterrows()] for m in metrics},
        index=ci.index,
    )


def significance_html(test: dict, ci: pd.DataFrame) -> str:
    """What the paired test and the intervals allow us to say about the difference."""
    significant = difference_is_significant(test, ci)
    bounds = "; ".join(
        f"{escape(name)} macro-F1 {row['macro-F1']:.3f} [{row['macro-F1 low']:.3f}, {row['macro-F1 high']:.3f}]"
        for name, row in ci.iterrows()
    )
    verdict = (
        "the difference between the models is significant at the 5 % level"
        if significant
        else "the difference between the models is not significant at the 5 % level"
    )
    return (
        f"<p>95 % bootstrap intervals over the test images: {bounds}. McNemar's exact test on the paired "
        f"predictions ({test['only_a']} image(s) right only for {escape(test['first'])}, {test['only_b']} only for "
        f"{escape(test['second'])}) gives p = {test['p_value']:.3g}: {verdict}.</p>"
    )


def results_html(results: dict[str, ModelResults]) -> str:
    best, other = _ranked(results)
    b, o = best.metrics, other.metrics
    return (
        f"<p>{escape(best.name)} reaches {pct(b['accuracy'])} test accuracy against {pct(o['accuracy'])} for "
        f"{escape(other.name)}, a difference of {100 * (b['accuracy'] - o['accuracy']):.1f} points on "
        f"{b['test_images']} test images. Its balanced accuracy is {compare_words(b['balanced_accuracy'], o['balanced_accuracy'])} "
        f"({b['balanced_accuracy']:.3f} against {o['balanced_accuracy']:.3f}) and its macro-F1 "
        f"{compare_words(b['macro_f1'], o['macro_f1'])} ({b['macro_f1']:.3f} against {o['macro_f1']:.3f}). "
        "These are the numbers of one split and one seed.</p>"
    )


def agreement_html(agreement: pd.DataFrame) -> str:
    first, second = agreement.index.name, agreement.columns.name
    only_first, only_second = int(agreement.loc["right", "wrong"]), int(agreement.loc["wrong", "right"])
    both_wrong = int(agreement.loc["wrong", "wrong"])
    return (
        f"<p>{escape(first)} classifies {only_first} test image(s) correctly that {escape(second)} gets wrong, "
        f"and {escape(second)} {only_second} that {escape(first)} gets wrong; {both_wrong} image(s) defeat both.</p>"
    )


def discussion_html(audit: dict, results: dict[str, ModelResults], overfit_threshold: float = 5.0) -> str:
    small, small_n = smallest_class(audit)
    parts = []
    for r in results.values():
        gap = overfitting_gap(r.history)
        verdict = (
            f"overfits: at the kept epoch its training accuracy exceeds its validation accuracy by {gap:.1f} points"
            if gap > overfit_threshold
            else f"shows little overfitting at the kept epoch (training minus validation accuracy: {gap:.1f} points)"
        )
        parts.append(f"{escape(r.name)} {verdict}")
    support = next(iter(results.values())).metrics["per_class"][small]["support"]
    minority = ", ".join(
        f"{escape(r.name)} {r.metrics['per_class'][small]['f1']:.2f} (recall {r.metrics['per_class'][small]['recall']:.2f})"
        for r in results.values()
    )
    cost = "; ".join(
        f"{escape(r.name)} trained for {r.metrics['training_seconds']:.0f} s over {sum(r.metrics['epochs_run'].values())} "
        f"epochs and classifies an image in {1000 * r.metrics['inference_seconds_per_image']:.1f} ms"
        for r in results.values()
    )
    return (
        f"<p><b>Overfitting.</b> {'; '.join(parts)}.</p>"
        f"<p><b>The minority class.</b> <i>{escape(small)}</i> has {small_n} images, of which {support} are in the "
        f"test split. F1 on it: {minority} (the original study scored 0.00 with both models). With so few test "
        f"images, each one moves this class's recall by {1 / max(support, 1):.2f}: these numbers are fragile.</p>"
        f"<p><b>Cost.</b> {cost} on this machine.</p>"
    )


def conclusion_html(results: dict[str, ModelResults], significant: bool) -> str:
    best, other = _ranked(results)
    finding = (
        f"{escape(best.name)} gives the better macro-F1 ({best.metrics['macro_f1']:.3f} against "
        f"{other.metrics['macro_f1']:.3f}), and the difference is significant on this split"
        if significant
        else f"{escape(best.name)} scores the higher macro-F1 ({best.metrics['macro_f1']:.3f} against "
        f"{other.metrics['macro_f1']:.3f}), but on this split the difference is not significant"
    )
    return (
        f"<p>On this data, {finding}. Future work: repeated splits and seeds, so that intervals reflect the "
        "variation between splits and initialisations as well as between test images; splits that keep "
        "near-duplicate photographs together; and methods aimed at the minority class beyond class weights.</p>"
    )


def params_yaml(params) -> str:
    return yaml.safe_dump(params.to_dict(), sort_keys=False, allow_unicode=True)


def key_value_table(values: dict, key: str, value: str) -> pd.DataFrame:
    return pd.DataFrame({value: [str(v) for v in values.values()]}, index=pd.Index(list(values), name=key))


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _report_only(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with its code hidden and only displayed results kept (no logs, no warnings)."""
    notebook = nbformat.from_dict(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
    notebook.cells = [c for c in notebook.cells if c.cell_type == "markdown" or c.outputs]
    return notebook


def render_html(executed_notebook: Path, title: str) -> str:
    """The executed report notebook as one standalone HTML page, without any code."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(_report_only(nbformat.read(executed_notebook, as_version=4)))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE.read_text()}</style></head><body><main>{body}</main></body></html>\n"
    )


def render_pdf(html: str, pdf_path: Path) -> int:
    """The HTML page printed to PDF by WeasyPrint (A4, page numbers; see report.css); returns the page count."""
    from weasyprint import HTML

    document = HTML(string=html).render()
    document.write_pdf(pdf_path)
    return len(document.pages)


def render(executed_notebook: Path, html_path: Path, pdf_path: Path, title: str) -> int:
    """Write the report as HTML and PDF; returns the PDF's page count."""
    html = render_html(executed_notebook, title)
    html_path.write_text(html, encoding="utf-8")
    return render_pdf(html, pdf_path)


def steps_table(steps: dict) -> pd.DataFrame:
    """Wall time of each step, and whether it was reused from the previous run (inputs unchanged)."""
    return pd.DataFrame(
        {
            "wall time (s)": [entry.get("seconds") for entry in steps.values()],
            "reused": ["yes, inputs unchanged" if entry.get("reused") else "no, run" for entry in steps.values()],
        },
        index=pd.Index(list(steps), name="step"),
    )
