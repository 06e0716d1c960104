"""The lines that say what to do when nothing is forwarded."""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry_segment import hints


def test_the_no_user_id_hint_says_what_to_do_for_each_kind_of_application() -> None:
    line = hints.no_user_id(data_collection=True)
    assert "skipped_no_user" in line
    assert 'sentry_sdk.set_user({"id": ...})' in line
    assert "send_default_pii=True" in line
    assert 'data_collection={"user_info": True}' in line
    assert "Django under ASGI needs set_user" in line
    for framework in ("Django", "Flask-Login", "FastAPI"):
        assert framework in line
    assert "\n" not in line


def test_before_sentry_sdk_2_65_the_hint_names_the_version_that_has_data_collection() -> None:
    line = hints.no_user_id(data_collection=False)
    assert "send_default_pii=True (data_collection on sentry-sdk 2.65+)" in line
    assert '{"user_info": True}' not in line


def test_the_hint_follows_the_installed_sentry_sdk() -> None:
    from sentry_sdk.consts import DEFAULT_OPTIONS

    expected = hints.no_user_id(data_collection="data_collection" in DEFAULT_OPTIONS)
    assert hints.no_user_id() == expected


def test_the_no_dsn_hint_names_the_variable_and_a_dsn_that_works_anywhere() -> None:
    line = hints.no_dsn()
    assert line.startswith("SENTRY_DSN is not set")
    assert "skipped_not_sent" in line
    assert "http://public@127.0.0.1:9/1" in line


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("http://api.segment.io", True),
        ("HTTP://segment.internal.example:8080", True),
        ("http://10.0.0.7", True),
        ("https://api.segment.io", False),
        ("http://127.0.0.1:8765", False),
        ("http://127.3.2.1", False),
        ("http://localhost:8765", False),
        ("http://[::1]:8765", False),
    ],
)
def test_a_clear_text_host_off_this_machine_is_warned_about(host: str, warned: bool) -> None:
    warning: Optional[str] = hints.clear_text_host(host)
    assert (warning is not None) is warned
    if warning is not None:
        assert host in warning
        assert "clear text" in warning


@given(st.text())
def test_any_host_text_gives_a_warning_or_none_and_never_raises(host: str) -> None:
    warning = hints.clear_text_host(host)
    assert warning is None or host.strip().lower().startswith("http://")
