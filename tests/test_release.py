"""What the napari hub and PyPI show comes from the package metadata and the README: the README's
one-line commands and images, the citation file, the changelog and the pyproject fields the hub
reads. (CI builds and installs the wheel itself: .ci/run and tests/smoke.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pyproject_urls() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "urls"]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_readme_keeps_its_commands_and_its_images_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
            "pip install . && napari-b2u demo") in text
    assert 'pip install -e ".[testing]" && python -m pytest -q' in text
    for heading in ("## Export to bioimage.io", "## Cite"):
        assert heading in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) >= 2
    # the napari hub shows the README but not images at relative links (issue 30.12): absolute
    # URLs of the files on the repository's main branch, which exist here
    raw = pyproject_urls()["Source Code"].replace("https://github.com/",
                                                  "https://raw.githubusercontent.com/")
    for link in images:
        assert link.startswith(f"{raw}/main/"), link
        assert (ROOT / link[len(f"{raw}/main/"):]).is_file(), link
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_citation_file_names_the_papers_and_matches_the_package(pyproject):
    yaml = pytest.importorskip("yaml")
    from napari_b2u.zoo.text import PAPERS

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == pyproject["license"]
    cited = [cff["preferred-citation"]] + cff["references"]
    urls = {c["url"] for c in cited}
    for key in ("b2u", "b2s", "dbsn", "n2v", "nbr2nbr"):  # the packages cite the same papers
        assert PAPERS[key][1] in urls, key
    assert "Blind2Unblind" in cff["preferred-citation"]["title"]
    assert cff["repository-code"] == pyproject["urls"]["Source Code"]


def test_metadata_the_hub_reads(pyproject):
    assert "version" in pyproject["dynamic"] and "version" not in pyproject
    assert 20 < len(pyproject["description"]) < 160  # the hub's one-line summary
    assert "Framework :: napari" in pyproject["classifiers"]
    assert {"Source Code", "Bug Tracker", "Documentation", "User Support"} <= set(
        pyproject["urls"])
    assert pyproject["entry-points"]["napari.manifest"]["napari-b2u"] == "napari_b2u:napari.yaml"
    extras = pyproject["optional-dependencies"]
    assert not any("bioimageio" in d for d in pyproject["dependencies"])  # optional
    assert any(d.startswith("bioimageio.core") for d in extras["bioimageio"])
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog and "bioimage.io" in changelog
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"pretrained/*.b2u", "pretrained/*.md", "napari.yaml"} <= set(
        data["package-data"]["napari_b2u"])
