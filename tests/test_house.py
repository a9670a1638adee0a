"""The house rules that a reader relies on, checked cheaply: files of one sitting, timeless library docstrings,
and no reaching into folders by editing the import path."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "minimuse").rglob("*.py"))
# Measurement history belongs in docs/ and dev/LOG.md: dates, the notebook's names and section titles, the
# machine's mood, measured durations and speed-ups.
HISTORY = re.compile(r"\d{4}-\d\d-\d\d|benchmarks\.md|LOG\.md|dev/LOG|(slow|fast) day|"
                     r"\b(second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth) look|"
                     r"\b\d+(\.\d+)? ?(ms|min)\b|\b\d+(\.\d+)?x (faster|slower)", re.IGNORECASE)


def test_every_library_module_reads_in_one_sitting():
    long = {str(p.relative_to(ROOT)): n for p in LIBRARY if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these into one idea per file: {long}"


def test_library_comments_and_docstrings_carry_no_measurement_history():
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in LIBRARY
             for i, line in enumerate(p.read_text().splitlines(), 1) if HISTORY.search(line)]
    assert not found, "\n".join(found)


def test_nothing_reaches_code_by_editing_the_import_path():
    files = [p for folder in ("tests", "benchmarks", "research", "scripts", "tutorials", "minimuse")
             for p in (ROOT / folder).rglob("*.py") if p != Path(__file__)]
    found = [str(p.relative_to(ROOT)) for p in files if re.search(r"sys\.path", p.read_text())]
    assert not found, f"import these as packages instead: {found}"
