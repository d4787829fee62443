"""The documentation a reader navigates: the README stays a short front door, and every
relative link in it and in docs/ leads to a file and heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """The page without its fenced code blocks (a link in a code sample is not a link)."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)


def slugs(path: Path) -> set[str]:
    """The anchors a forge makes of a page's headings."""
    found = set()
    for line in _prose(path).splitlines():
        if match := re.match(r"^#{1,6} (.+)$", line):
            text = re.sub(r"[^\w\- ]", "", match[1].strip().lower())
            found.add(text.replace(" ", "-"))
    return found


def test_the_readme_is_a_short_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    assert "./dev run" in readme and "./dev test" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for match in _LINK.finditer(_prose(page)):
        target = match[1] or match[2]
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not followed here
        file, _, anchor = target.partition("#")
        goal = (page.parent / file).resolve() if file else page
        if not goal.exists():
            broken.append(f"{target}: no such file")
        elif anchor and goal.suffix == ".md" and anchor not in slugs(goal):
            broken.append(f"{target}: no heading #{anchor} in {goal.name}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    linked = set(re.findall(r"\(docs/([\w-]+\.md)", readme))
    assert sorted(pages - linked) == []
