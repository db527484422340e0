"""The audit-scale benchmark generates its class folders and reports every size it audited."""

import importlib.util

import pytest
from PIL import Image

from lib.core.paths import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("audit_scale", PROJECT_ROOT / "benchmarks" / "audit_scale.py")
audit_scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit_scale)


def test_the_generated_dataset_has_the_asked_size_classes_and_modes(tmp_path):
    root = audit_scale.make_dataset(tmp_path / "images", 40, 4)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 40 and len({f.parent.name for f in files}) == 4
    assert {Image.open(f).mode for f in files} == {"RGB", "L", "CMYK"}


@pytest.mark.slow
def test_each_size_is_audited_and_split_in_its_own_process(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    assert audit_scale.main(["--sizes", "60,90", "--classes", "3", "--image-size", "32", "--random-weights",
                             "--write", str(out)]) == 0
    table = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in table[2:]] == ["60", "90"]
    assert "peak resident" in table[0] and all("GiB" in row for row in table[2:])
