"""Options from keyword arguments and environment variables, and every configuration error."""

from __future__ import annotations

import importlib.util
import inspect
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry_segment import ConfigurationError, SegmentIntegration
from sentry_segment.config import (
    ENV,
    EU_HOST,
    OPTION_NAMES,
    US_HOST,
    ProjectOverride,
    mask,
    resolve,
    unknown_variables,
)
from sentry_segment.routing import project_route

KEY = "wk_ConfigTestKey_9876543210"
ANONYMOUS_ID = "SENTRY_SEGMENT_ANONYMOUS_ID"
EVENT_TYPES = "SENTRY_SEGMENT_EVENT_TYPES"
PROFILE_URL = "SENTRY_SEGMENT_PROFILE_URL"


def test_defaults() -> None:
    options = resolve(write_key=KEY, environ={})
    assert options.write_key == KEY
    assert options.host == US_HOST
    assert [str(item) for item in options.rate_limit] == ["200 per 1 second"]
    assert options.projects == {}
    assert options.enabled is True
    assert options.event_name == "Error Captured"
    assert options.max_queue_size == 10_000


def test_every_option_comes_from_the_environment() -> None:
    environ = {
        "SENTRY_SEGMENT_WRITE_KEY": KEY,
        "SENTRY_SEGMENT_REGION": "EU",
        "SENTRY_SEGMENT_RATE_LIMIT": "50/second;1000/hour",
        "SENTRY_SEGMENT_PROJECTS": json.dumps({"12": {"enabled": False}}),
        "SENTRY_SEGMENT_ENABLED": "yes",
        "SENTRY_SEGMENT_EVENT_NAME": "Backend Error",
        "SENTRY_SEGMENT_MAX_QUEUE_SIZE": "500",
        "SENTRY_SEGMENT_TIMEOUT": "2.5",
        "SENTRY_SEGMENT_MAX_RETRIES": "0",
    }
    options = resolve(environ=environ)
    assert options.write_key == KEY
    assert options.host == EU_HOST
    assert [str(item) for item in options.rate_limit] == ["50 per 1 second", "1000 per 1 hour"]
    assert options.projects == {"12": ProjectOverride(enabled=False)}
    assert options.event_name == "Backend Error"
    assert options.max_queue_size == 500
    assert options.timeout == 2.5
    assert options.max_retries == 0


def test_explicit_arguments_win_over_the_environment() -> None:
    environ = {
        "SENTRY_SEGMENT_WRITE_KEY": "wk_fromEnvironment",
        "SENTRY_SEGMENT_REGION": "eu",
        "SENTRY_SEGMENT_ENABLED": "false",
        "SENTRY_SEGMENT_RATE_LIMIT": "1/second",
    }
    options = resolve(
        write_key=KEY, host="http://127.0.0.1:9/", enabled=True, rate_limit="off", environ=environ
    )
    assert options.write_key == KEY
    assert options.host == "http://127.0.0.1:9"
    assert options.enabled is True
    assert options.rate_limit == ()


def test_the_integration_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("SENTRY_SEGMENT_HOST", "https://segment.internal.example")
    integration = SegmentIntegration()
    assert integration.options.write_key == KEY
    assert integration.options.host == "https://segment.internal.example"


def test_no_write_key_is_no_error_but_an_inert_integration() -> None:
    # As sentry-sdk without a DSN: local development and CI have no key.
    assert resolve(environ={}).write_key is None
    assert resolve(environ={"SENTRY_SEGMENT_ENABLED": "0"}).write_key is None
    assert project_route(resolve(environ={}), "1").enabled is False
    assert project_route(resolve(environ={}), "1").skipped_as == "skipped_no_write_key"
    with_project_key = resolve(
        enabled=False, projects={"4": {"enabled": True, "write_key": KEY}}, environ={}
    )
    assert project_route(with_project_key, "4").enabled is True
    assert project_route(with_project_key, "5").skipped_as == "skipped_disabled"


@pytest.mark.parametrize(
    "given",
    [KEY + "\n", " " + KEY, "\t" + KEY + "\r\n", KEY + " \n\n"],
)
def test_surrounding_whitespace_is_stripped_from_every_option(given: str) -> None:
    # Keys read from secrets files and Kubernetes secrets often end in a newline.
    assert resolve(write_key=given, environ={}).write_key == KEY
    assert resolve(environ={"SENTRY_SEGMENT_WRITE_KEY": given}).write_key == KEY
    from_environment = resolve(
        environ={
            "SENTRY_SEGMENT_WRITE_KEY": given,
            "SENTRY_SEGMENT_REGION": " eu\n",
            "SENTRY_SEGMENT_RATE_LIMIT": "10/second\n",
            "SENTRY_SEGMENT_EVENT_NAME": " Backend Error \n",
            "SENTRY_SEGMENT_MAX_QUEUE_SIZE": "50\n",
            "SENTRY_SEGMENT_INCLUDE": " tags , handled\n",
        }
    )
    assert from_environment.host == EU_HOST
    assert from_environment.event_name == "Backend Error"
    assert from_environment.max_queue_size == 50
    assert from_environment.include == ("tags", "handled")
    projects = resolve(write_key=KEY, projects={"3": {"write_key": given}}, environ={})
    assert projects.projects["3"].write_key == KEY


@pytest.mark.parametrize("given", ["wk_half\nother_half", "wk key", "wk_tab\there"])
def test_whitespace_inside_a_write_key_is_named_as_such(given: str) -> None:
    for kwargs, environ in (({"write_key": given}, {}), ({}, {"SENTRY_SEGMENT_WRITE_KEY": given})):
        with pytest.raises(ConfigurationError, match="whitespace") as raised:
            resolve(environ=environ, **kwargs)
        assert "SENTRY_SEGMENT_WRITE_KEY" in str(raised.value)


@pytest.mark.parametrize("limit", ["0/second", "200/second;0/hour", "0 per minute"])
def test_a_rate_limit_of_zero_is_refused_pointing_at_enabled(limit: str) -> None:
    with pytest.raises(ConfigurationError, match="SENTRY_SEGMENT_ENABLED=false") as raised:
        resolve(write_key=KEY, rate_limit=limit, environ={})
    assert "SENTRY_SEGMENT_RATE_LIMIT" in str(raised.value)


def test_misspelt_variables_are_listed_with_the_likely_one() -> None:
    environ = {
        "SENTRY_SEGMENT_WRITEKEY": KEY,
        "SENTRY_SEGMENT_REGOIN": "eu",
        "SENTRY_SEGMENT_COLOUR": "blue",
        "SENTRY_SEGMENT_HOST": "https://h.example",
        "SENTRY_DSN": "https://k@o1.ingest.sentry.io/1",
    }
    assert unknown_variables(environ) == [
        "SENTRY_SEGMENT_COLOUR is not a sentry-segment setting",
        "SENTRY_SEGMENT_REGOIN is not a sentry-segment setting; "
        "did you mean SENTRY_SEGMENT_REGION?",
        "SENTRY_SEGMENT_WRITEKEY is not a sentry-segment setting; "
        "did you mean SENTRY_SEGMENT_WRITE_KEY?",
    ]
    assert unknown_variables({"SENTRY_SEGMENT_HOST": "x"}) == []


def test_an_unknown_keyword_argument_names_the_likely_option() -> None:
    with pytest.raises(TypeError, match="writekey"):
        SegmentIntegration(writekey=KEY)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="did you mean 'write_key'"):
        resolve(writekey=KEY, environ={})


def test_the_integrations_keyword_arguments_are_the_options_table() -> None:
    parameters = inspect.signature(SegmentIntegration).parameters
    assert list(parameters) == list(OPTION_NAMES)
    assert all(parameter.kind is parameter.KEYWORD_ONLY for parameter in parameters.values())
    assert all(parameter.default is None for parameter in parameters.values())


def test_include_takes_a_list_or_a_comma_separated_string_and_refuses_unknown_names() -> None:
    assert resolve(include=["handled", "tags"], environ={}).include == ("tags", "handled")
    assert resolve(include="exception_message,tags,", environ={}).include == (
        "tags",
        "exception_message",
    )
    assert resolve(environ={}).include == ()
    with pytest.raises(ConfigurationError, match="SENTRY_SEGMENT_INCLUDE") as raised:
        resolve(include="tags,frames", environ={})
    assert "tags, exception_message, handled, sentry_url, stacktrace" in str(raised.value)
    with pytest.raises(ConfigurationError, match="SENTRY_SEGMENT_INCLUDE"):
        resolve(include=7, environ={})


def test_sentry_url_needs_the_organization_and_a_web_url() -> None:
    with pytest.raises(ConfigurationError) as raised:
        resolve(include="sentry_url", environ={})
    assert "SENTRY_SEGMENT_SENTRY_ORG" in str(raised.value)
    assert "SENTRY_SEGMENT_INCLUDE" in str(raised.value)
    options = resolve(include="sentry_url", sentry_org="acme", environ={})
    assert options.shape.issues_url == "https://sentry.io/organizations/acme/issues/"
    self_hosted = resolve(
        environ={
            "SENTRY_SEGMENT_INCLUDE": "sentry_url",
            "SENTRY_SEGMENT_SENTRY_ORG": "acme",
            "SENTRY_SEGMENT_SENTRY_WEB_URL": "https://sentry.internal.example/",
        }
    )
    assert self_hosted.shape.issues_url == (
        "https://sentry.internal.example/organizations/acme/issues/"
    )
    for bad in ({"sentry_org": "acme corp"}, {"sentry_web_url": "sentry.internal"}):
        with pytest.raises(ConfigurationError, match="SENTRY_SEGMENT_SENTRY_"):
            resolve(environ={}, **bad)


def test_before_forward_must_be_callable_and_has_no_environment_variable() -> None:
    with pytest.raises(ConfigurationError, match="before_forward must be a function"):
        resolve(before_forward="drop_everything", environ={})
    assert "before_forward" not in ENV


@pytest.mark.parametrize(
    ("kwargs", "environ", "option", "variable"),
    [
        ({"write_key": "has spaces in it"}, {}, "write_key", "SENTRY_SEGMENT_WRITE_KEY"),
        ({"write_key": 123}, {}, "write_key", "SENTRY_SEGMENT_WRITE_KEY"),
        ({}, {"SENTRY_SEGMENT_PROJECTS": "{not json"}, "projects", "SENTRY_SEGMENT_PROJECTS"),
        ({}, {"SENTRY_SEGMENT_PROJECTS": "[1, 2]"}, "projects", "SENTRY_SEGMENT_PROJECTS"),
        ({"projects": {"1": {"writekey": "x"}}}, {}, "projects", "SENTRY_SEGMENT_PROJECTS"),
        ({"projects": {"1": {"write_key": ""}}}, {}, "projects", "SENTRY_SEGMENT_PROJECTS"),
        ({"projects": {"1": {"write_key": None}}}, {}, "projects", "SENTRY_SEGMENT_PROJECTS"),
        ({"projects": {"1": {"enabled": "no"}}}, {}, "projects", "SENTRY_SEGMENT_PROJECTS"),
        ({"projects": {"web": {"enabled": False}}}, {}, "projects", "SENTRY_SEGMENT_PROJECTS"),
        ({"projects": {"1": False}}, {}, "projects", "SENTRY_SEGMENT_PROJECTS"),
        ({"rate_limit": "lots"}, {}, "rate_limit", "SENTRY_SEGMENT_RATE_LIMIT"),
        (
            {},
            {"SENTRY_SEGMENT_RATE_LIMIT": "200/fortnight"},
            "rate_limit",
            "SENTRY_SEGMENT_RATE_LIMIT",
        ),
        ({"rate_limit": 200}, {}, "rate_limit", "SENTRY_SEGMENT_RATE_LIMIT"),
        ({"region": "ap"}, {}, "region", "SENTRY_SEGMENT_REGION"),
        ({}, {"SENTRY_SEGMENT_REGION": "mars"}, "region", "SENTRY_SEGMENT_REGION"),
        ({"host": "api.segment.io"}, {}, "host", "SENTRY_SEGMENT_HOST"),
        ({"host": "ftp://api.segment.io"}, {}, "host", "SENTRY_SEGMENT_HOST"),
        ({"host": "https://api.segment.io/v1"}, {}, "host", "SENTRY_SEGMENT_HOST"),
        ({"host": "https://x", "region": "eu"}, {}, "region", "SENTRY_SEGMENT_REGION"),
        (
            {},
            {"SENTRY_SEGMENT_HOST": "https://x", "SENTRY_SEGMENT_REGION": "eu"},
            "host",
            "SENTRY_SEGMENT_HOST",
        ),
        ({}, {"SENTRY_SEGMENT_ENABLED": "maybe"}, "enabled", "SENTRY_SEGMENT_ENABLED"),
        ({"event_name": "  "}, {}, "event_name", "SENTRY_SEGMENT_EVENT_NAME"),
        ({"max_queue_size": 0}, {}, "max_queue_size", "SENTRY_SEGMENT_MAX_QUEUE_SIZE"),
        (
            {},
            {"SENTRY_SEGMENT_MAX_QUEUE_SIZE": "ten"},
            "max_queue_size",
            "SENTRY_SEGMENT_MAX_QUEUE_SIZE",
        ),
        ({"max_queue_size": 2.5}, {}, "max_queue_size", "SENTRY_SEGMENT_MAX_QUEUE_SIZE"),
        ({"timeout": 0}, {}, "timeout", "SENTRY_SEGMENT_TIMEOUT"),
        ({}, {"SENTRY_SEGMENT_TIMEOUT": "soon"}, "timeout", "SENTRY_SEGMENT_TIMEOUT"),
        ({"timeout": float("nan")}, {}, "timeout", "SENTRY_SEGMENT_TIMEOUT"),
        ({"max_retries": -1}, {}, "max_retries", "SENTRY_SEGMENT_MAX_RETRIES"),
        ({}, {"SENTRY_SEGMENT_MAX_RETRIES": "many"}, "max_retries", "SENTRY_SEGMENT_MAX_RETRIES"),
        ({"anonymous_id": "ajs_anonymous_id"}, {}, "anonymous_id", ANONYMOUS_ID),
        ({"anonymous_id": "header:x"}, {}, "anonymous_id", ANONYMOUS_ID),
        ({}, {ANONYMOUS_ID: "cookie:"}, "anonymous_id", ANONYMOUS_ID),
        ({"event_types": "error,log"}, {}, "event_types", EVENT_TYPES),
        ({}, {EVENT_TYPES: "message"}, "event_types", EVENT_TYPES),
        ({"profile_url": "app.segment.com/{user_id}"}, {}, "profile_url", PROFILE_URL),
        ({"profile_url": "https://app.segment.com/x"}, {}, "profile_url", PROFILE_URL),
        ({"profile_url": "https://a.example/{email}"}, {}, "profile_url", PROFILE_URL),
        ({}, {PROFILE_URL: "https://a.example/{user_id"}, "profile_url", PROFILE_URL),
    ],
)
def test_invalid_configuration_names_the_option_and_its_variable(
    kwargs: dict[str, Any], environ: dict[str, str], option: str, variable: str
) -> None:
    if option != "write_key":
        kwargs.setdefault("write_key", KEY)
    with pytest.raises(ConfigurationError) as raised:
        resolve(environ=environ, **kwargs)
    message = str(raised.value)
    assert option in message
    assert variable in message
    assert KEY not in message


def test_errors_from_the_integration_constructor_never_show_the_write_key() -> None:
    secret = "wk_SuperSecret_0000"
    with pytest.raises(ConfigurationError) as raised:
        SegmentIntegration(write_key=secret, projects={"1": {"write_key": secret + " x"}})
    assert secret not in str(raised.value)
    assert "SENTRY_SEGMENT_PROJECTS" in str(raised.value)


def test_write_keys_are_masked_in_reprs_and_descriptions() -> None:
    other = "wk_ProjectSecret_1111222233"
    options = resolve(write_key=KEY, projects={"3": {"write_key": other}}, environ={})
    for text in (
        repr(options),
        str(options),
        json.dumps(options.describe()),
        repr(options.projects),
    ):
        assert KEY not in text
        assert other not in text
    assert options.describe()["write_key"] == mask(KEY) == "****3210"
    assert options.describe()["projects"] == {"3": {"write_key": "****2233"}}
    assert mask("short") == "****"
    assert mask(None) == "<unset>"


@given(st.text())
def test_any_projects_text_is_accepted_or_refused_with_a_configuration_error(text: str) -> None:
    try:
        options = resolve(write_key=KEY, projects=text, environ={})
    except ConfigurationError as error:
        message = str(error)
    else:
        assert all(project.isdigit() for project in options.projects)
        return
    assert "SENTRY_SEGMENT_PROJECTS" in message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=4))
def test_any_projects_object_is_accepted_or_refused_with_a_configuration_error(
    projects: dict[str, Any],
) -> None:
    try:
        resolve(write_key=KEY, projects=json.dumps(projects), environ={})
    except ConfigurationError as error:
        message = str(error)
    else:
        return
    assert "SENTRY_SEGMENT_PROJECTS" in message


@given(st.text())
def test_any_rate_limit_text_is_accepted_or_refused_with_a_configuration_error(text: str) -> None:
    try:
        resolve(write_key=KEY, rate_limit=text, environ={})
    except ConfigurationError as error:
        message = str(error)
    else:
        return
    assert "SENTRY_SEGMENT_RATE_LIMIT" in message


def test_rate_limit_storage_accepts_limits_uris_and_masks_passwords() -> None:
    options = resolve(
        write_key=KEY, rate_limit_storage="redis://:s3cret@127.0.0.1:6379/0", environ={}
    )
    assert options.rate_limit_storage == "redis://:s3cret@127.0.0.1:6379/0"
    assert options.describe()["rate_limit_storage"] == "redis://:****@127.0.0.1:6379/0"
    assert "s3cret" not in repr(options)
    from_env = resolve(
        environ={
            **{"SENTRY_SEGMENT_WRITE_KEY": KEY},
            "SENTRY_SEGMENT_RATE_LIMIT_STORAGE": "rediss://h:1",
        }
    )
    assert from_env.rate_limit_storage == "rediss://h:1"
    assert resolve(write_key=KEY, environ={}).rate_limit_storage == "memory://"


@pytest.mark.parametrize("uri", ["mongodb://127.0.0.1", "127.0.0.1:6379", "etcd://x"])
def test_unsupported_rate_limit_storages_are_refused(uri: str) -> None:
    with pytest.raises(ConfigurationError, match="SENTRY_SEGMENT_RATE_LIMIT_STORAGE"):
        resolve(write_key=KEY, rate_limit_storage=uri, environ={})


def test_a_storage_whose_client_library_is_missing_names_the_extra_to_install() -> None:
    if importlib.util.find_spec("pymemcache") is not None:
        pytest.skip("pymemcache is installed here")
    with pytest.raises(ConfigurationError, match=r"sentry-segment\[memcached\]"):
        resolve(write_key=KEY, rate_limit_storage="memcached://127.0.0.1:11211", environ={})


def test_the_options_beyond_the_forwarder_are_off_by_default_and_read_as_documented() -> None:
    defaults = resolve(environ={})
    assert (defaults.anonymous_id, defaults.event_types, defaults.profile_url) == (
        (), ("error",), None,
    )  # fmt: skip
    template = "https://app.segment.com/acme/unify/spaces/prod/explorer/{user_id}"
    environ = {
        "SENTRY_SEGMENT_ANONYMOUS_ID": " cookie:ajs_anonymous_id, tag:anon ,user:anonymous_id",
        "SENTRY_SEGMENT_EVENT_TYPES": "message,error",
        "SENTRY_SEGMENT_PROFILE_URL": template,
    }
    options = resolve(environ=environ)
    assert [str(source) for source in options.anonymous_id] == [
        "cookie:ajs_anonymous_id", "tag:anon", "user:anonymous_id",
    ]  # fmt: skip
    assert options.shape.anonymous_id == options.anonymous_id
    assert options.event_types == ("error", "message")
    assert options.profile_url == template
    described = options.describe()
    assert described["anonymous_id"] == ["cookie:ajs_anonymous_id", "tag:anon", "user:anonymous_id"]
    assert described["event_types"] == ["error", "message"]
    assert described["profile_url"] == template
    json.dumps(described)
    as_kwargs = resolve(anonymous_id=["tag:anon"], event_types=["error"], environ=environ)
    assert [str(source) for source in as_kwargs.anonymous_id] == ["tag:anon"]
    assert as_kwargs.event_types == ("error",)
