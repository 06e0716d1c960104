"""The suite's own guard: a test fails where sentry_sdk swallowed an internal error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent

SWALLOWING_TESTS = textwrap.dedent(
    """
    import sys
    import threading

    import pytest
    from sentry_sdk.utils import capture_internal_exceptions

    from sentry_segment import integration


    def test_on_the_test_thread(init_sentry):
        init_sentry()
        with capture_internal_exceptions():
            raise ValueError("swallowed")


    def test_on_another_thread(init_sentry):
        init_sentry()

        def work():
            with capture_internal_exceptions():
                raise KeyError("swallowed")

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()


    def test_through_the_name_our_module_imported():
        try:
            raise OSError("swallowed")
        except OSError:
            integration.capture_internal_exception(sys.exc_info())


    @pytest.mark.internal_errors_expected(raises=ValueError)
    def test_expected(init_sentry):
        init_sentry()
        with capture_internal_exceptions():
            raise ValueError("meant")


    @pytest.mark.internal_errors_expected(raises=KeyError)
    def test_expected_of_another_type(init_sentry):
        init_sentry()
        with capture_internal_exceptions():
            raise ValueError("not meant")


    def test_nothing_swallowed(init_sentry):
        init_sentry()
    """
)


def test_a_swallowed_internal_error_fails_its_test_unless_the_test_expects_it(
    tmp_path: Path,
) -> None:
    # The suite's conftest beside these tests, in a folder of their own.
    copy = tmp_path / "tests"
    copy.mkdir()
    for name in ("__init__.py", "conftest.py", "support.py", "redis_server.py"):
        shutil.copy(HERE / name, copy / name)
    (copy / "test_swallowing.py").write_text(SWALLOWING_TESTS)
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}",
         "-W", "ignore::pytest.PytestUnknownMarkWarning", str(copy)],
        cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    failed = {
        case.attrib["name"]
        for case in ET.parse(report).iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    }
    assert failed == {
        "test_on_the_test_thread",
        "test_on_another_thread",
        "test_through_the_name_our_module_imported",
        "test_expected_of_another_type",
    }
