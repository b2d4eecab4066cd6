"""The shipped files stand on their own: no paths to a folder beside the checkout (``../shared``,
``/work/shared``, ``$ALPOSE_SHARED``), no citations of issue numbers, and a README short enough to
read. Tests (``tests/``) may point at external test vectors; everything else may not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150

LITERALS = ("../shared", "/work/shared", "ALPOSE_SHARED")
CITATIONS = (
    re.compile(r"\bissues?[\s:]*#?\d+\b", re.IGNORECASE),  # issue 12, issues #3, Issue: 7
    re.compile(r"\bissues?\b.{0,40}?#\d+\b", re.IGNORECASE),  # issue tracker #12, issues #3, #4
)
DATA_SUFFIXES = {".csv", ".png", ".h5"}  # results/<run>/*: measured data, not prose


def tracked_files() -> list[Path]:
    """Files of the checkout's index outside tests/, less binaries and results/<run>/ data."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    files = []
    for name in filter(None, names):
        parts = Path(name).parts
        if parts[0] == "tests":
            continue
        if parts[0] == "results" and len(parts) > 2 and Path(name).suffix in DATA_SUFFIXES:
            continue
        path = REPO / name
        if path.is_file():  # a file deleted in the working tree but not yet in the index
            files.append(path)
    return files


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def offences(line: str) -> list[str]:
    found = [s for s in LITERALS if s in line]
    for pattern in CITATIONS:
        found += [m.group(0) for m in pattern.finditer(line)]
    return found


def test_offences_are_recognised():
    assert offences("root: ${oc.env:ALPOSE_SHARED,../shared}/refdata") == [
        "../shared",
        "ALPOSE_SHARED",
    ]
    assert offences("see /work/shared/x") == ["/work/shared"]
    for cited in (
        "fixed in issue 12",
        "Issues #3 and #4",
        "(issue#7)",
        "issue: 9",
        "issue tracker #5",
    ):
        assert offences(cited), cited
    for fine in (
        "# 1 stack",
        "rows #12",
        "an issue with 2 joints",
        "issues",
        "tissue 3",
        "#2 best",
    ):
        assert not offences(fine), fine


def test_no_outside_paths_or_issue_citations():
    offenders = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for found in offences(line):
                offenders.append(
                    f"{path.relative_to(REPO)}:{number}: {found!r}: {line.strip()[:120]}"
                )
    if offenders:
        pytest.fail(f"{len(offenders)} outside references:\n" + "\n".join(offenders), pytrace=False)


def test_readme_is_at_most_150_lines():
    lines = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


ANCHOR_SECTIONS = re.compile(
    r"docs/anchor\.md`{0,2}((?:[ ,/]+(?:s\.)?\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?(?: and \d+(?:\.\d+)?)?)*)"
)


def anchor_citations(text: str) -> tuple[set[str], set[str]]:
    """(sections, bug ids) that ``text`` cites from docs/anchor.md: ``docs/anchor.md 6.7``,
    ``docs/anchor.md s.1.1, s.5``, ``B17``."""
    sections = {
        sec for m in ANCHOR_SECTIONS.finditer(text) for sec in re.findall(r"\d+(?:\.\d+)?", m[1])
    }
    return sections, set(re.findall(r"\bB(\d+)\b", text))


def test_anchor_citations_are_read_as_meant():
    text = "see docs/anchor.md 2.2-2.3 and (docs/anchor.md s.1.1, s.5, B5/B6); ``docs/anchor.md`` 9"
    assert anchor_citations(text) == ({"2.2", "2.3", "1.1", "5", "9"}, {"5", "6"})


def test_every_anchor_citation_in_the_code_resolves_in_docs():
    """Each section and bug the code and configs cite exists in docs/anchor.md."""
    anchor = (REPO / "docs" / "anchor.md").read_text()
    headings = set(re.findall(r"^#+ (\d+(?:\.\d+)*)[ .]", anchor, re.M))
    bugs = set(re.findall(r"\*\*B(\d+)\b", anchor)) or set(re.findall(r"\bB(\d+)\b", anchor))
    missing = []
    for path in tracked_files():
        if path.suffix not in (".py", ".yaml"):
            continue
        sections, cited_bugs = anchor_citations(path.read_text(errors="replace"))
        rel = path.relative_to(REPO)
        missing += [f"{rel}: section {s}" for s in sorted(sections - headings)]
        missing += [f"{rel}: bug B{b}" for b in sorted(cited_bugs - bugs, key=int)]
    assert not missing, "cited but not in docs/anchor.md:\n" + "\n".join(missing)
