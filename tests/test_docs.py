"""The repository explains itself: every "docs/ARCHITECTURE.md section N" reference names a section
that exists, and nothing points at a design document outside the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
REFERENCE = re.compile(r"ARCHITECTURE\.md section (\d+(?:\.\d+)*)")
OUTSIDE = re.compile(r"DESIGN(?:\.md| section)")


def _sources() -> list[Path]:
    folders = ("core", "app", "tests", "benchmarks", "examples", "docs")
    files = [ROOT / "README.md", *(p for f in folders for p in (ROOT / f).rglob("*") if p.is_file())]
    return [p for p in files if p.suffix in (".py", ".md") and p != Path(__file__).resolve()]


def _sections() -> set[str]:
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)*)\.? ", ARCHITECTURE.read_text(), flags=re.M)
    return set(headings)


def test_every_reference_names_a_section():
    sections = _sections()
    assert {"1", "5.2", "8", "12.2", "13"} <= sections
    bad = [f"{path.relative_to(ROOT)}: section {number}" for path in _sources()
           for number in REFERENCE.findall(path.read_text()) if number not in sections]
    assert not bad, f"references to sections docs/ARCHITECTURE.md does not have: {bad}"


def test_nothing_points_outside_the_repository():
    bad = [str(path.relative_to(ROOT)) for path in _sources() if OUTSIDE.search(path.read_text())]
    assert not bad, f"these files point at a design document outside the repository: {bad}"
