"""The README and docs say what the code does: every Python block runs as written, and the
tables of options and counters are the code's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sentry_sdk.consts import DEFAULT_OPTIONS

from sentry_segment.config import OPTIONS
from sentry_segment.payload import INCLUDABLE, Shape
from sentry_segment.schema import message_schema
from sentry_segment.stats import COUNTERS
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import ROOT, WRITE_KEY

DOCUMENTS = [Path(ROOT) / "README.md", *sorted((Path(ROOT) / "docs").glob("*.md"))]
pytest_plugins = ["pytester"]


def python_blocks() -> list[tuple[str, int, str]]:
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((document.name, line, match.group(1)))
    return blocks


BLOCKS = python_blocks()
SCRIPTS = [
    pytest.param(*block, id=f"{block[0]}:{block[1]}")
    for block in BLOCKS
    if "def test_" not in block[2]
]
TESTS = [
    pytest.param(*block, id=f"{block[0]}:{block[1]}") for block in BLOCKS if "def test_" in block[2]
]


@pytest.mark.parametrize(("document", "line", "code"), SCRIPTS)
def test_every_python_block_runs_as_written(
    document: str, line: int, code: str, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    if "send_default_pii" in code and "send_default_pii" not in DEFAULT_OPTIONS:
        pytest.skip("the docs show sentry-sdk 2's send_default_pii, which 3.0's beta replaced")
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")},
        "SENTRY_DSN": sentry.dsn(),
        "SENTRY_SEGMENT_HOST": segment.host,
        "SENTRY_SEGMENT_WRITE_KEY": WRITE_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{document}:{line}\n{done.stderr}"
    if "capture_exception()" in code:
        [message] = segment.tracked("Error Captured", userId="42")
        assert message["messageId"] == sentry.wait_for_events(1)[0]["event_id"]
        assert "'delivered': 1" in done.stdout


@pytest.mark.parametrize(("document", "line", "code"), TESTS)
def test_every_test_in_the_docs_passes_with_the_plugin(
    document: str, line: int, code: str, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile(test_from_the_docs=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1, f"{document}:{line}"
    assert set(outcomes) <= {"passed", "warnings"}, f"{document}:{line}: {outcomes}"


def table_rows(heading: str) -> list[list[str]]:
    """The cells of the first table under this README heading."""
    section = (Path(ROOT) / "README.md").read_text().split(f"## {heading}\n", 1)[1]
    rows = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_the_options_table_is_the_code_s() -> None:
    rows = [row for row in table_rows("Options") if row[0] != "---"]
    assert [row[0].strip("`") for row in rows] == [option.name for option in OPTIONS]
    for row, option in zip(rows, OPTIONS):
        variable = option.metadata["env"]
        assert row[1] == (f"`{variable}`" if variable else "(keyword only)"), option.name


def test_the_counters_table_names_every_counter() -> None:
    named = {
        name.strip("` ") for row in table_rows("Counters") for name in row[0].split(",")
        for name in name.split("/")
    }  # fmt: skip
    assert named == set(COUNTERS)


def test_the_include_table_names_every_includable_field_and_the_schema_has_each() -> None:
    section = (Path(ROOT) / "README.md").read_text().split("| `include` | adds |", 1)[1]
    rows = [line for line in section.split("\n\n", 1)[0].splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip().strip("`") for row in rows] == list(INCLUDABLE)
    every = message_schema(Shape(include=INCLUDABLE))["properties"]["properties"]["required"]
    assert len(every) == len(message_schema(Shape())["properties"]["properties"]["required"]) + len(
        INCLUDABLE
    )
