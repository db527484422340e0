"""README.md and docs/: figures quoted from their record, links that resolve, examples that run as written,
commands, flags, params fields and methods that exist, and words about the project alone."""

from __future__ import annotations

import argparse
import re
import shlex
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import load_script
from pydantic import BaseModel

from lib.core.config import Params, parse_params
from lib.core.minority import METHODS
from lib.core.paths import PROJECT_ROOT
from lib.data.sources import IMAGE_EXTENSIONS

ROOT = PROJECT_ROOT
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



# --------------------------------------------------------------------------------------
# What the pages name exists: minority-class methods, params fields, commands and their flags
# --------------------------------------------------------------------------------------


def inline_code(page_text: str) -> list[str]:
    """The page's inline code spans, outside fenced blocks."""
    spans, in_fence = [], False
    for line in page_text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            spans += re.findall(r"`([^`]+)`", line)
    return spans


def code_blocks(page_text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page_text, flags=re.DOTALL)


# Ways of countering class imbalance that a page might name, by the registry name each would have.
IMBALANCE_TECHNIQUES = {
    r"class[- ]weight": "class_weight", r"oversampl": "oversample", r"logit adjustment": "logit_adjustment",
    r"\bmixup\b": "mixup", r"\bcut-?mix\b": "cutmix", r"\bsmote\b": "smote", r"undersampl": "undersample",
    r"focal loss": "focal_loss", r"\bremix\b": "remix", r"balanced softmax": "balanced_softmax",
}


def named_methods(text: str) -> dict[str, str]:
    """``registry name -> where``: the minority-class methods the text names, in words or as a `methods` value."""
    named = {}
    for pattern, name in IMBALANCE_TECHNIQUES.items():
        for match in re.finditer(pattern, text, flags=re.IGNORECASE):
            named.setdefault(name, text[max(0, match.start() - 40):match.end() + 20].replace("\n", " "))
    for listed in re.findall(r"methods\s*[:=]\s*\[([^\]]*)\]", text):
        for name in re.findall(r"[A-Za-z_]+", listed):
            named.setdefault(name, f"methods: [{listed}]")
    return named


def test_every_minority_method_the_pages_name_is_in_the_registry():
    unknown = {f"{page.relative_to(ROOT)}: {name} ({where!r})"
               for page in PAGES for name, where in named_methods(page.read_text()).items() if name not in METHODS}
    assert not unknown, "methods named but not in lib/core/minority.py's METHODS:\n" + "\n".join(sorted(unknown))


def test_the_method_check_finds_an_unbuilt_method():
    assert set(named_methods("or mixing (mixup, CutMix), class weights")) == {"mixup", "cutmix", "class_weight"}
    assert set(named_methods("`--set 'minority.methods=[class_weight, focal]'`")) == {"class_weight", "focal"}
    assert "cutmix" not in METHODS and "focal" not in METHODS


FILE_SUFFIXES = {"html", "pdf", "json", "csv", "yaml", "yml", "py", "md", "png", "keras", "onnx", "ipynb", "txt",
                 "zip", "h5", "sh", "lock"}


def field_exists(model: type[BaseModel], path: list[str]) -> bool:
    """Whether ``a.b.c`` is a field of the params schema, section by section."""
    for depth, name in enumerate(path):
        field = model.model_fields.get(name)
        if field is None:
            return False
        annotation = field.annotation
        if depth < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def yaml_keys(values: dict, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every key path of a params mapping (``{data: {source: x}}`` gives ``data`` and ``data.source``)."""
    paths = []
    for key, value in values.items():
        paths.append([*prefix, str(key)])
        if isinstance(value, dict) and not (prefix + (str(key),))[-1] in ("max_per_class",):
            paths += yaml_keys(value, prefix + (str(key),))
    return paths


def named_fields(text: str) -> list[str]:
    """The params fields the text names: dotted names in inline code (`minority.methods`,
    `training.backend: jax`, `--set mobilenet_v2.dropout=0.4`) and the keys of inline params mappings
    (`evaluation: {scheme: holdout, seeds: [42]}`) and of YAML blocks."""
    sections = set(Params.model_fields)
    fields = []
    for span in inline_code(text) + re.findall(r"--set '?([\w.]+=[^\s']*)", text):
        for dotted in re.findall(r"(?<![\w./-])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?=\s*[:=]|\s*$|[\s\"'])", span):
            parts = dotted.split(".")
            if parts[0] in sections and parts[-1] not in FILE_SUFFIXES:
                fields.append(dotted)
        if re.match(rf"^(?:{'|'.join(sections)}):\s*\{{", span):
            values = yaml.safe_load(span)
            fields += [".".join(path) for path in yaml_keys(values)]
    for block in code_blocks(text, "yaml"):
        fields += [".".join(path) for path in yaml_keys(yaml.safe_load(block))]
    return list(dict.fromkeys(fields))


def test_every_params_field_the_pages_name_is_in_the_schema():
    unknown = {f"{page.relative_to(ROOT)}: {field}" for page in PAGES for field in named_fields(page.read_text())
               if not field_exists(Params, field.split("."))}
    assert not unknown, "params fields named but not in lib/core/config.py:\n" + "\n".join(sorted(unknown))


def test_the_field_check_finds_a_field_the_schema_lacks():
    text = ("`minority.methods` and `training.backend: jax`, `--set mobilenet_v2.dropuot=0.4`, "
            "`evaluation: {scheme: holdout, seeds: [42], rounds: 3}`, `report.html`, `lib.core.config`")
    named = named_fields(text)
    assert named == ["minority.methods", "training.backend", "mobilenet_v2.dropuot", "evaluation",
                     "evaluation.scheme", "evaluation.seeds", "evaluation.rounds"]
    assert [field for field in named if not field_exists(Params, field.split("."))] == [
        "mobilenet_v2.dropuot", "evaluation.rounds"]


class CapturedParser(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


@contextmanager
def capturing_parsers():
    """While inside: the first argparse parse call raises `CapturedParser` with its parser, so that a
    command's ``main`` hands over its parser instead of running."""
    originals = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args

    def capture(self, *args, **kwargs):
        raise CapturedParser(self)

    argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = capture
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = originals


def parser_of(entry) -> argparse.ArgumentParser:
    """The parser that ``entry()`` (a command's main or argument function) builds, without running it."""
    with capturing_parsers():
        try:
            entry()
        except CapturedParser as captured:
            return captured.parser
    raise AssertionError(f"{entry} parsed no arguments")


def shell_script_module(script: Path) -> str | None:
    """The Python module a bash script hands its arguments to (``exec ... -m lib.run "$@"``), if any."""
    handed = re.search(r'-m\s+([\w.]+)\s+"\$@"', script.read_text())
    return handed.group(1) if handed else None


def project_parser(program: str) -> argparse.ArgumentParser | None:
    """The parser of a project command, by how a page calls it (``./run_all.sh``, ``python -m lib.deploy.export``,
    ``python benchmarks/x.py``), or None for another program. The module's ``parse_args`` function is asked
    where it has one, else its ``main``."""
    import importlib

    if program.endswith(".sh") and (ROOT / program).is_file():
        program = shell_script_module(ROOT / program) or program
    if re.fullmatch(r"lib(?:\.\w+)+", program):
        module = importlib.import_module(program)
    elif re.fullmatch(r"(?:tools|benchmarks)/\w+\.py", program) and (ROOT / program).is_file():
        module = load_script(program)
    else:
        return None
    entry = getattr(module, "parse_args", None) or getattr(module, "main", None)
    return parser_of(lambda: entry([])) if entry else None


def shell_flags(script: Path) -> set[str]:
    """The flags a bash script's ``case`` takes (``--gpu)``)."""
    return set(re.findall(r"^\s*(--[\w-]+)\)", script.read_text(), flags=re.MULTILINE))


# Programs the pages call that are not the project's: no parser of ours to check them against.
OTHER_PROGRAMS = {"mkdir", "cp", "cd", "sha256sum", "sbatch", "scontrol", "head", "srun", "jupyter", "pytest", "mlflow"}
# Flags of other programs that the pages name (Slurm's, XLA's, MLflow's).
OTHER_FLAGS = {"--nodes", "--ntasks-per-node", "--gpus-per-node", "--xla_gpu_deterministic_ops",
               "--backend-store-uri"}


def shell_commands(block: str) -> list[str]:
    """The simple commands of a bash block: continuation lines joined, comments, prompts (``node0$``) and
    Slurm directives dropped, split at ``&&``, ``;`` and ``|`` and out of ``( )``; a ``bash -c "..."`` gives
    the command inside."""
    text = re.sub(r"\s*\\\n\s*", " ", block)
    text = re.sub(r"\$\([^()]*\)", "1", text)  # a command substitution, as a value
    commands = []
    for line in text.splitlines():
        line = re.sub(r"^\w+\$\s+", "", line.strip())
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"\s+#.*$", "", line)
        inner = re.search(r'bash -c "(.*)"', line)
        line = inner.group(1) if inner else line
        for part in re.split(r"&&|;|\|", line):
            part = part.strip().strip("()").strip()
            if part:
                commands.append(part)
    return commands


def command_words(command: str) -> tuple[str, list[str]]:
    """``(program, arguments)`` of a command: shell variables and placeholders given a value, environment
    assignments dropped, ``python -m module`` and ``python script.py`` named by their module or script."""
    command = re.sub(r"\\?\$(?:\{\w+\}|\w+)", "1", command)  # $VAR, ${VAR} as a value
    command = re.sub(r"<[^<>]+>", "x", command)
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
        words = words[1:]
    if not words:  # an assignment alone
        return "", []
    # placeholders (N, DIR, HOST:PORT) given a value that every type takes
    program, arguments = words[0], ["1" if re.fullmatch(r"[A-Z][A-Z_]*(?::[A-Z]+)?", w) else w for w in words[1:]]
    if re.search(r"(?:^|/)python3?$", program):
        if arguments[:1] == ["-m"]:
            program, arguments = arguments[1], arguments[2:]
        else:
            program, arguments = arguments[0], arguments[1:]
    if program == "bash" and arguments:
        program, arguments = arguments[0], arguments[1:]
    return program.rsplit("/bin/", 1)[-1] if "/bin/" in program else program, arguments


def command_problem(command: str) -> str | None:
    """Why a command as a page writes it would not run as written (its parser refuses it), or None."""
    program, arguments = command_words(command)
    if not program or program in OTHER_PROGRAMS:
        return None
    if program.endswith(".sh") and (ROOT / program).is_file() and not shell_script_module(ROOT / program):
        unknown = [a for a in arguments if a.startswith("-") and a not in shell_flags(ROOT / program)]
        missing = [a for a in arguments if not a.startswith("-") and not (ROOT / a).exists()]
        problems = ([f"takes no {unknown}"] if unknown else []) + ([f"{missing} do not exist"] if missing else [])
        return f"{program}: {'; '.join(problems)}" if problems else None
    parser = project_parser(program)
    if parser is None:
        return f"{program!r}: neither a project command nor a known other program"
    parser.allow_abbrev = False  # a page names each flag in full
    try:
        parser.parse_args(arguments)
    except SystemExit:
        return f"{program} refuses {arguments}: {parser.format_usage().strip()}"
    return None


def page_commands(text: str) -> list[str]:
    """Every command a page shows: each simple command of its bash blocks, and inline code that starts with
    a project command (``./run_all.sh --set ...``) and is not a usage synopsis (``[--run DIR]``)."""
    commands = [c for block in code_blocks(text, "bash") for c in shell_commands(block)]
    starts = r"^(?:\./(?:run_all|predict|app)\.sh|\.venv/bin/python|python3? )"
    return commands + [span for span in inline_code(text) if re.match(starts, span) and not re.search(r"[\[|]", span)]


def test_every_command_the_pages_show_parses():
    problems = [f"{page.relative_to(ROOT)}: `{command}`: {problem}" for page in PAGES
                for command in page_commands(page.read_text()) if (problem := command_problem(command))]
    assert not problems, "commands that would not run as written:\n" + "\n".join(problems)


def test_the_command_check_finds_a_flag_no_parser_takes():
    block = ('node0$ ./run_all.sh params/default.yaml --coordinator node0:1 --num-processes 2 \\\n  --process-id 0\n'
             'srun bash -c "./run_all.sh --num-processes \\$SLURM_NTASKS --prosess-id 1"\n'
             'tools/setup_env.sh --cpu && .venv/bin/python -m lib.deploy.export --run reports/default  # a comment\n')
    commands = shell_commands(block)
    assert commands == ["./run_all.sh params/default.yaml --coordinator node0:1 --num-processes 2 --process-id 0",
                        './run_all.sh --num-processes \\$SLURM_NTASKS --prosess-id 1', "tools/setup_env.sh --cpu",
                        ".venv/bin/python -m lib.deploy.export --run reports/default"]
    assert [command_problem(c) is not None for c in commands] == [False, True, True, False]
    assert command_problem("./predict.sh --rank margin --csv queue.csv FOLDER") is None
    assert command_problem("./predict.sh --rank least_confident FOLDER") is not None
    assert command_problem("./predict.sh --top 3 FOLDER") is not None  # argparse would take it for --top-k
    assert command_problem(".venv/bin/python benchmarks/step_seconds.py reports/x/rounds/seed-42 --model cnn") is None
    assert command_problem(".venv/bin/python benchmarks/step_seconds.py RUN_DIR --model resnet") is not None


def every_parser_flag() -> set[str]:
    """The flags of every project command the pages call, and of the bash scripts they name."""
    programs = {command_words(c)[0] for page in PAGES for c in page_commands(page.read_text())}
    programs |= set(re.findall(r"(?:tools|benchmarks)/\w+\.py", " ".join(page.read_text() for page in PAGES)))
    flags = set()
    for program in programs:
        parser = project_parser(program)
        if parser is not None:
            flags |= {flag for action in parser._actions for flag in action.option_strings}
    for script in re.findall(r"(?:tools|benchmarks)/\w+\.sh", " ".join(page.read_text() for page in PAGES)):
        flags |= shell_flags(ROOT / script)
    return flags


def named_flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", text))


def test_every_flag_the_pages_name_is_one_a_parser_takes():
    known = every_parser_flag() | OTHER_FLAGS
    unknown = {f"{page.relative_to(ROOT)}: {flag}" for page in PAGES for flag in named_flags(page.read_text())
               if flag not in known}
    assert not unknown, "flags named but taken by no parser:\n" + "\n".join(sorted(unknown))


def test_the_flag_check_finds_a_flag_no_parser_takes():
    flags = named_flags("`--jobs N` runs steps at once; `--verbose-ish` and --rank margin; a-b --not")
    assert flags == {"--jobs", "--verbose-ish", "--rank", "--not"}
    assert {"--jobs", "--rank", "--gpu", "--max-mib"} <= every_parser_flag()
    assert "--verbose-ish" not in every_parser_flag()


def run_all_params_files(text: str) -> list[tuple[int, str]]:
    """``(position, params file)`` of every ``./run_all.sh params/...`` (or ``lib.run params/...``) in the text."""
    return [(match.start(1), match.group(1))
            for match in re.finditer(r"(?:run_all\.sh|lib\.run)\s+(params/[\w.-]+\.ya?ml)", text)]


def written_first(text: str, path: str, position: int) -> bool:
    """Whether the text tells the reader to write the file before it runs it."""
    written = re.search(rf"write `{re.escape(path)}`", text)
    return written is not None and written.start() < position


def test_every_params_file_the_pages_run_exists_or_is_written_first():
    texts = {page: page.read_text() for page in PAGES}
    missing = [f"{page.relative_to(ROOT)}: {path}" for page, text in texts.items()
               for position, path in run_all_params_files(text)
               if not (ROOT / path).is_file() and not written_first(text, path, position)]
    assert not missing, "params files run but neither in params/ nor written first:\n" + "\n".join(missing)


def test_the_params_file_check_finds_a_file_nobody_wrote():
    text = "write `params/mine.yaml` ... run `./run_all.sh params/mine.yaml` and `./run_all.sh params/big.yaml`"
    found = run_all_params_files(text)
    assert [path for _, path in found] == ["params/mine.yaml", "params/big.yaml"]
    assert [written_first(text, path, position) for position, path in found] == [True, False]
    assert not written_first("`./run_all.sh params/mine.yaml`, then write `params/mine.yaml`", "params/mine.yaml", 14)


# --------------------------------------------------------------------------------------
# The README itself: short, its words defined before use, its figures from named entries
# --------------------------------------------------------------------------------------


def test_the_readme_is_at_most_220_lines():
    assert len(README.read_text().splitlines()) <= 220


GLOSSARY_TERMS = ["round", "step", "minority-class method", "linear probe"]


def first_uses_before_the_glossary(text: str) -> list[str]:
    """The glossary's terms used before the glossary, and not linked to it where first used."""
    glossary = text.index("## Glossary")
    early = []
    for term in GLOSSARY_TERMS:
        use = re.search(rf"\b{term}s?\b", text, flags=re.IGNORECASE)
        if use and use.start() < glossary and not text[use.end():use.end() + 12].startswith("](#glossary)"):
            early.append(term)
    return early


def test_the_glossary_comes_before_its_terms_are_used():
    assert not first_uses_before_the_glossary(README.read_text())


def test_the_glossary_check_finds_a_term_used_before_it():
    assert first_uses_before_the_glossary("one round, a [step](#glossary)\n## Glossary\nstep, round") == ["round"]


def quoted_entries(text: str) -> list[str]:
    """The RESULTS.md entries a page names: by their whole heading, ``"2026-12-04: the default study, ..."``,
    or by date and the start of their title, ``(2026-11-26, step reuse)`` (up to its first comma)."""
    text = " ".join(text.split())
    whole = re.findall(r'"(\d{4}-\d{2}-\d{2}: [^"]+)"', text)
    short = [f"{date}: {title.strip()}" for date, title in re.findall(r"\b(\d{4}-\d{2}-\d{2}), ([^,;()]+)", text)]
    return whole + short


def entry_exists(title: str, headings: list[str]) -> bool:
    """Whether a heading of that date holds the title (backticks and ``.py`` aside)."""
    date, words = title.split(": ", 1)
    return any(heading.startswith(date) and words in heading.replace("`", "").replace(".py", "") for heading in headings)


def test_every_results_entry_a_page_quotes_exists():
    headings = [" ".join(line.lstrip("#").split()) for line in RESULTS.read_text().splitlines() if line.startswith("#")]
    missing = [f"{page.relative_to(ROOT)}: {title}" for page in PAGES for title in quoted_entries(page.read_text())
               if not entry_exists(title, headings)]
    assert not missing, "entries quoted but not in benchmarks/RESULTS.md:\n" + "\n".join(missing)


def test_the_entry_check_finds_an_entry_that_does_not_exist():
    quoted = quoted_entries('from "2026-12-04: the default\nstudy, four methods" (`RESULTS.md`, 2026-11-26, audit_scale;'
                            ' 2026-11-25, issue 7 targets, commit 1)')
    assert quoted == ["2026-12-04: the default study, four methods", "2026-11-26: audit_scale",
                      "2026-11-25: issue 7 targets"]
    headings = ["2026-12-04: the default study, four methods, after the fix", "2026-11-26: `benchmarks/audit_scale.py`"]
    assert [entry_exists(title, headings) for title in quoted] == [True, True, False]


# --------------------------------------------------------------------------------------
# Words about the project alone, not about how it was made
# --------------------------------------------------------------------------------------

ABOUT_THE_MAKING = [
    r"\bissues? #?\d+", r"\bissue's\b", r"(?<!photo )\bsessions?\b(?!\s*=|\.\w)", r"\btested here\b", r"\blent\b",
    r"\bthis (?:task|branch)\b", r"\bmain's\b", r"\bthe lead\b", r"\bof mine\b", r"\bmy\b",
    r"\bI (?:ran|did|had|measured|started|ran|tried|saw)\b", r"\bwas(?: not)? available to\b",
    r"(?<!from )\bhelpers?\b(?![.\w])", r"\bagents?\b",
]
MADE_WORDS = re.compile("|".join(ABOUT_THE_MAKING), flags=re.IGNORECASE)
PROJECT_TEXTS = [*PAGES, RESULTS, *sorted((ROOT / "tools").glob("*.*")),
                 *sorted(p for p in (ROOT / "benchmarks").glob("*.*") if p.suffix in (".py", ".sh", ".yaml"))]


def words_about_the_making(text: str) -> list[str]:
    return [match.group(0) for match in MADE_WORDS.finditer(text)]


def test_the_projects_files_speak_of_the_project_alone():
    found = [f"{path.relative_to(ROOT)}:{number}: {words}" for path in PROJECT_TEXTS
             for number, line in enumerate(path.read_text().splitlines(), start=1)
             if (words := words_about_the_making(line))]
    assert not found, "words about how the project was made, not about the project:\n" + "\n".join(found)


def test_the_words_check_finds_words_about_the_making():
    assert words_about_the_making("(issue 27's fix) Tested here; ran beside my tests; another session's work; "
                                  "no GPU was lent to this task") == [
        "issue 27", "Tested here", "my", "session", "lent", "this task"]
    assert words_about_the_making("one photo session; tests/helpers.py; InferenceSession; --process-id I") == []
