"""The package's own metadata builds without a deprecation warning: setuptools announced that a TOML-table
`project.license` (and the other deprecated forms) stops building after 2027-02-18, and pip installs with
the newest setuptools it finds, so a fresh `make install` would fail on every machine. Two checks: the
pyproject.toml rules read with tomllib, and setuptools itself applying the file with warnings as errors."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
MIN_SETUPTOOLS = (77, 0)  # the first setuptools that reads an SPDX `license` string and `license-files`


def pyproject_problems(data: dict, root: Path) -> list[str]:
    """What is wrong with a parsed pyproject.toml (at `root`) for a setuptools >= 77 build, one line each."""
    problems = []
    project = data.get("project", {})
    license_ = project.get("license")
    if not isinstance(license_, str):
        problems.append(f"project.license must be an SPDX expression string (setuptools >= 77), got {license_!r}")
    classifiers = [c for c in project.get("classifiers", []) if c.startswith("License ::")]
    if classifiers:
        problems.append(f"License classifiers are deprecated next to an SPDX license: {classifiers}")
    for pattern in project.get("license-files", []):
        if not list(root.glob(pattern)):
            problems.append(f"project.license-files: {pattern!r} matches no file in {root}")
    requires = data.get("build-system", {}).get("requires", [])
    pins = [re.fullmatch(r"setuptools\s*>=\s*(\d+)(?:\.(\d+))?.*", r.replace(" ", "")) for r in requires]
    floors = [(int(m.group(1)), int(m.group(2) or 0)) for m in pins if m]
    if not floors or max(floors) < MIN_SETUPTOOLS:
        problems.append(f"build-system.requires must ask for setuptools>={MIN_SETUPTOOLS[0]}, got {requires}")
    if any(r.split(">")[0].split("=")[0].strip() == "wheel" for r in requires):
        problems.append("build-system.requires lists 'wheel': setuptools >= 70.1 builds wheels itself")
    return problems


def test_pyproject_uses_the_spdx_license_and_a_setuptools_that_reads_it():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject_problems(data, ROOT) == []
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


OLD_FORM = """
[build-system]
requires = ["setuptools>=68", "wheel"]
[project]
name = "x"
version = "0"
license = { text = "MIT" }
"""


def test_the_check_rejects_the_old_table_license(tmp_path):
    problems = pyproject_problems(tomllib.loads(OLD_FORM), tmp_path)
    assert any("project.license" in p for p in problems)
    assert any("setuptools>=77" in p for p in problems)
    assert any("'wheel'" in p for p in problems)
    missing = tomllib.loads(OLD_FORM.replace('{ text = "MIT" }', '"MIT"\nlicense-files = ["LICENSE*"]'))
    assert any("matches no file" in p for p in pyproject_problems(missing, tmp_path))


def apply_with_warnings_as_errors(pyproject: Path):
    """setuptools' own reading of [project], as a build does it, with every warning raised."""
    setuptools = pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    major = int(setuptools.__version__.split(".")[0])
    if major < MIN_SETUPTOOLS[0]:
        pytest.skip(f"setuptools {setuptools.__version__} < {MIN_SETUPTOOLS[0]} cannot read the SPDX form")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return apply_configuration(Distribution(), str(pyproject))


def test_setuptools_builds_the_metadata_without_a_warning(monkeypatch):
    monkeypatch.chdir(ROOT)
    dist = apply_with_warnings_as_errors(ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "MIT"
    assert dist.metadata.license_files == ["LICENSE"]


def test_setuptools_warns_on_the_old_form(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(OLD_FORM, encoding="utf-8")
    shutil.copy(ROOT / "LICENSE", tmp_path / "LICENSE")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Warning, match="project.license. as a TOML table is deprecated"):
        apply_with_warnings_as_errors(tmp_path / "pyproject.toml")
