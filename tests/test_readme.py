"""README examples run as written, and print what the README says they print."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _expected_output(code: str) -> list[str]:
    """Comment lines right after a print(...) line are that print's output."""
    expected, after_print = [], False
    for line in code.splitlines():
        stripped = line.strip()
        if stripped.startswith("# ") and after_print:
            expected.append(stripped[2:])
            continue
        after_print = "print(" in stripped
    return expected


def test_readme_has_python_examples() -> None:
    assert _blocks()


def test_readme_python_examples_run_and_print_what_they_say(tmp_path: Path) -> None:
    for code in _blocks():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), {"__name__": "readme"})
        printed = [line.rstrip() for line in out.getvalue().splitlines()]
        assert printed == _expected_output(code)
