"""README.md and docs/: figures quoted from their record, links that resolve, examples that run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lib.core.config import parse_params
from lib.data.sources import IMAGE_EXTENSIONS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

# A measured figure: a number or a range (4-13, 99.0 ± 0.8) with a unit of time, memory, speed, share or
# ratio. Counts, sizes in pixels and parameter values carry no such unit and are not figures here.
NUMBER = r"\d[\d,]*(?:\.\d+)?"
FIGURE = re.compile(rf"(?<![\w.,/-])({NUMBER}(?:\s*(?:-|–|±)\s*{NUMBER})?)(\s*)(s|min|minutes|hours|GiB|GB|MiB|MB|"
                    rf"images/s|%|x)(?![\w/])")
ESTIMATE = "estimate"  # a figure on a line with this word is an estimate, not a measurement


def prose_lines(page: Path) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, inline code removed (commands and field names hold
    numbers that are not figures)."""
    lines, in_fence = [], False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            lines.append((number, re.sub(r"`[^`]*`", "", line)))
    return lines


def figures(line: str) -> list[tuple[str, str]]:
    """``(number, unit)`` of each measured figure on the line; ``4 x 4`` (a size) is no ratio."""
    return [(number, unit) for number, space, unit in FIGURE.findall(line) if not (unit == "x" and space)]


def quoted_in_results(number: str, unit: str, results: str) -> bool:
    """Whether RESULTS.md holds the figure: with its unit, or as a whole cell of one of its tables (whose
    units are in the header)."""
    whole = rf"(?<![\d.,]){re.escape(number)}(?![\d.,]\d)"
    if re.search(whole + rf"\s*{re.escape(unit)}(?![\w/])", results):
        return True
    return any(re.search(rf"\|\s*{whole}\s*(?:\[[^]]*\])?\s*\|", row) for row in results.splitlines() if row.startswith("|"))


def test_every_figure_is_quoted_from_the_results_or_marked_as_an_estimate():
    results = RESULTS.read_text().replace("*", "")
    unsourced = [f"{page.relative_to(ROOT)}:{number_of_line}: {number} {unit}"
                 for page in PAGES for number_of_line, line in prose_lines(page) if ESTIMATE not in line
                 for number, unit in figures(line.replace("*", "")) if not quoted_in_results(number, unit, results)]
    assert not unsourced, "figures found in no benchmarks/RESULTS.md entry (quote one, or mark an estimate):\n" + \
        "\n".join(unsourced)


def test_the_figure_check_finds_an_unsourced_figure():
    results = "| step | time |\n| audit | 41 s |\nThe run took **3,958 s** in all.\n".replace("*", "")
    assert figures("took 3,958 s, then 1.23x; 8 x 8 digits at 224 px, 99.0 ± 0.8 %") == [
        ("3,958", "s"), ("1.23", "x"), ("99.0 ± 0.8", "%")]
    assert quoted_in_results("3,958", "s", results) and quoted_in_results("41", "s", results)
    assert not quoted_in_results("958", "s", results) and not quoted_in_results("3,958", "GiB", results)


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in page.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_resolves(page):
    broken = []
    for _, line in prose_lines(page):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and anchor not in heading_anchors(linked)):
                broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to what does not exist: {broken}"


def test_the_readme_names_every_image_extension_the_study_reads():
    text = README.read_text()
    assert not [ext for ext in sorted(IMAGE_EXTENSIONS) if f"`{ext}`" not in text]


def test_the_readmes_own_folder_params_are_valid_params(tmp_path):
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README shows no params file"
    for block in blocks:
        values = yaml.safe_load(block)
        values["data"]["directory"] = str(tmp_path)  # the example's folder does not exist here
        params = parse_params(values, source="README.md")
        assert params.evaluation.seeds == [42] and params.minority.methods == ["class_weight"]


@pytest.mark.slow  # exports a trained model
def test_the_readmes_onnxruntime_snippet_gives_the_exports_answer(finished_run, capsys):
    from lib.deploy import export
    from lib.deploy import finished_run as deploy

    snippet, = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    export.export_model(finished_run, "mobilenetv2")  # class weights: no post-processing to apply
    run_model = deploy.RunModel.open(finished_run, "mobilenetv2")
    photo = str(pd.read_csv(run_model.paths.predictions)["path"].iloc[0])
    folder = f"{export.export_dir(finished_run, 'mobilenetv2')}/"
    exec(snippet.replace("reports/default/export/mobilenetv2/", folder).replace("shelf.jpg", photo), {})

    onnx = deploy.OnnxClassifier(Path(folder) / "model.onnx", run_model.postprocessing)
    expected = onnx.probabilities(deploy.read_image(photo, run_model.input_size, 10**8)[None])[0]
    label, probability = capsys.readouterr().out.split()
    assert label == run_model.class_names[int(expected.argmax())]
    assert float(probability) == pytest.approx(float(expected.max()), abs=1e-5)
