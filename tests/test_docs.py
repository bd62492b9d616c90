"""The manual builds: `mkdocs build --strict` over docs/ (as `make docs` runs it), so a broken link or anchor,
or a page left out of mkdocs.yml's nav, fails the suite; and the README's links into docs/ point at pages."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, run

QUIET = {"NO_MKDOCS_2_WARNING": "1"}  # Material's banner about its successor, printed on every build


def build(project: Path, site: Path) -> tuple[int, str]:
    done = run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)], cwd=project, extra_env=QUIET)
    return done.returncode, done.stdout + done.stderr


def _copy_docs(dest: Path) -> Path:
    dest.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", dest / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", dest / "docs")
    return dest


def test_manual_builds_strict_with_every_page_in_the_nav(tmp_path):
    code, output = build(ROOT, tmp_path / "site")
    assert code == 0, output
    for page in (ROOT / "docs").glob("*.md"):
        html = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (tmp_path / "site" / html).is_file(), f"{page.name} was not built"


@pytest.mark.parametrize(
    "page, text, message",
    [
        ("start.md", "\nSee [the missing page](nowhere.md).\n", "nowhere.md"),
        ("start.md", "\nSee [a missing section](rstar.md#no-such-section).\n", "no-such-section"),
        ("orphan.md", "# Not in the nav\n", "orphan.md"),
    ],
)
def test_a_broken_link_or_a_page_outside_the_nav_fails_the_build(tmp_path, page, text, message):
    project = _copy_docs(tmp_path / "project")
    path = project / "docs" / page
    path.write_text((path.read_text() if path.exists() else "") + text)
    code, output = build(project, tmp_path / "site")
    assert code != 0 and message in output, output


def test_readme_links_into_the_manual_name_pages_that_exist():
    pages = set(_nav(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert links, "the README links into docs/"
    for link in links:
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"
        if link.endswith(".md"):
            assert link.removeprefix("docs/") in pages, f"README.md links to {link}, which is not in mkdocs.yml's nav"


def _nav(entries: list) -> list[str]:
    """Every page file of mkdocs.yml's nav, nested sections flattened."""
    pages: list[str] = []
    for entry in entries:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages.extend(_nav(value) if isinstance(value, list) else [value])
    return pages
