"""Documentation references resolve: every docs/<page>.md[#<section>] named in the code, configs, tests, scripts
and pages exists, with that section; and no project file cites design notes that are not in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = ("jaxseg", "docs", "benchmarks", "experiments", "configs", "tests", "launch", "README.md")
SUFFIXES = {".py", ".md", ".sh", ".sbatch", ".txt"}
# Notes that lived outside the repository; spelled in pieces so this file does not cite them itself.
MISSING_NOTES = tuple(name + ".md" for name in ("REFERENCE", "DESIGN", "PERFORMANCE")) + ("/".join(("..", "shared")),)

DOCS_REFERENCE = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
RELATIVE_LINK = re.compile(r"\]\(([\w-]+\.md)?(?:#([\w-]+))?\)")  # markdown links inside docs/: (page.md#x), (#x)


def project_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [f for f in candidates if f.is_file() and f.suffix in SUFFIXES and "__pycache__" not in f.parts]
    return files


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces → '-'."""
    result = set()
    for line in page.read_text().splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            result.add(text.replace(" ", "-"))
    return result


def references() -> list[tuple[str, str, str | None]]:
    """(where, page, section) for every documentation reference found."""
    found = []
    for path in project_files():
        text = path.read_text()
        relative = path.relative_to(ROOT)
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{relative}:{number}"
            found += [(where, page, section) for page, section in DOCS_REFERENCE.findall(line)]
            if path.parent == DOCS and path.suffix == ".md":
                for page, section in RELATIVE_LINK.findall(line):
                    if page or section:
                        found.append((where, page or path.name, section or None))
    return found


def test_references_were_found():
    pages = {page for _, page, _ in references()}
    assert {"algorithms.md", "sea_evaluation.md", "architecture.md"} <= pages


@pytest.mark.parametrize("where, page, section", references())
def test_documentation_reference_resolves(where, page, section):
    target = DOCS / page
    assert target.is_file(), f"{where} names docs/{page}, which does not exist"
    if section:
        assert section in anchors(target), f"{where} names docs/{page}#{section}; sections: {sorted(anchors(target))}"


def test_no_file_cites_notes_outside_the_repository():
    citing = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
              for path in project_files()
              for number, line in enumerate(path.read_text().splitlines(), 1)
              if any(note in line for note in MISSING_NOTES)]
    assert not citing, "cite docs/ pages or the papers instead:\n" + "\n".join(citing)
