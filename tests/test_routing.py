"""Per-project routing and the organization key of a DSN."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sentry_segment.config import resolve
from sentry_segment.routing import parse_dsn, route

KEY = "wk_OrgKey_123456"
PROJECT_KEY = "wk_ProjectKey_654321"


def test_organization_is_the_org_id_when_the_host_has_one() -> None:
    assert parse_dsn("https://abc@o123.ingest.us.sentry.io/456") == ("456", "123")
    assert parse_dsn("https://abc@o123.ingest.sentry.io/789/") == ("789", "123")


def test_organization_falls_back_to_host_and_public_key() -> None:
    assert parse_dsn("http://pub@127.0.0.1:9000/7") == ("7", "127.0.0.1:pub")
    assert parse_dsn("https://pub@sentry.example.com/prefix/3") == ("3", "sentry.example.com:pub")
    assert parse_dsn(None) == ("", "no-dsn")


def test_overrides_are_a_shallow_merge_where_the_override_wins() -> None:
    options = resolve(
        write_key=KEY,
        projects={"2": {"enabled": False}, "3": {"write_key": PROJECT_KEY}},
        environ={},
    )
    assert route(options, "https://k@o1.ingest.sentry.io/1").write_key == KEY
    assert route(options, "https://k@o1.ingest.sentry.io/1").enabled
    assert not route(options, "https://k@o1.ingest.sentry.io/2").enabled
    third = route(options, "https://k@o1.ingest.sentry.io/3")
    assert (third.enabled, third.write_key, third.organization) == (True, PROJECT_KEY, "1")


def test_a_project_can_be_the_only_one_enabled() -> None:
    options = resolve(
        enabled=False, projects={"5": {"enabled": True, "write_key": KEY}}, environ={}
    )
    assert route(options, "https://k@o1.ingest.sentry.io/5").enabled
    assert not route(options, "https://k@o1.ingest.sentry.io/6").enabled


@given(st.text())
def test_any_dsn_text_parses_without_raising(dsn: str) -> None:
    project, organization = parse_dsn(dsn)
    assert isinstance(project, str)
    assert organization
