"""The docs hold together: every relative link in README.md, ANALYSIS.md, exercises/README.md
and docs/*.md (pictures included) points at a file or folder of the repo, and every #anchor at
a heading of the page it names, as GitHub makes anchors from headings. The README's long
sections live in docs/, one link away, so a link that a move broke would otherwise go unseen."""
import re
from pathlib import Path

import pytest

from conftest import anchors

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "ANALYSIS.md", "exercises/README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")      # [text](target) and ![alt](target)


def links(page):
    """(target file, anchor or None) of each relative link on the page, outside code blocks."""
    text = re.sub(r"^```.*?^```$", "", (REPO / page).read_text(encoding="utf-8"), flags=re.M | re.S)
    found = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):           # http:, https:, mailto: go elsewhere
            continue
        path, _, anchor = target.partition("#")
        found.append(((REPO / page).parent / path if path else REPO / page, anchor or None))
    return found


def test_the_pages_link_to_each_other():
    """The README's index reaches every page in docs/: each is one link away."""
    readme = {path.resolve() for path, _ in links("README.md")}
    for page in sorted((REPO / "docs").glob("*.md")):
        assert page.resolve() in readme, f"README.md does not link to {page.name}"


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    found = links(page)
    assert found, page
    missing = [str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
               for path, _ in found if not path.resolve().exists()]
    assert missing == [], f"{page} links to files that do not exist"
    broken = [(str(path.resolve().relative_to(REPO)), anchor) for path, anchor in found
              if anchor and (path.suffix != ".md" or anchor not in anchors(path.read_text(encoding="utf-8")))]
    assert broken == [], f"{page} links to anchors that no heading makes"
