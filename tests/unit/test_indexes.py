import datetime as dt
import fnmatch
import re
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitmetrics.config import ConfigError, Settings
from hitmetrics.indexes import (
    index_name,
    index_template,
    is_own_index,
    local_day,
    parse_index_name,
    template_name,
)
from hitmetrics.model import Hit

DAY = dt.date(2026, 11, 25)


def test_index_name_pattern():
    assert index_name("hits", DAY, "production") == "hits-2026.11.25-production"
    assert index_name("hits", dt.date(2026, 1, 2), "dev_eu") == "hits-2026.01.02-dev_eu"


@pytest.mark.parametrize("environment", ["", "Prod", "prod,hits-*", "../x", "a b", "*", "prod-2026.01.01-x", "prod\n"])
def test_environment_names_cannot_escape_the_pattern(environment):
    with pytest.raises(ValueError, match="not a valid environment name"):
        index_name("hits", DAY, environment)


def test_parse_index_name_round_trips_and_ignores_other_names():
    assert parse_index_name("hits", index_name("hits", DAY, "staging")) == (DAY, "staging")
    for name in [
        "hits-2026.11.25",
        "hits-eu-2026.11.25-production",  # another prefix that starts like ours
        "hits-2026.13.45-production",
        "hits-2026.11.25-Production",
        "hits-2026.11.25-production-old",
        "xhits-2026.11.25-production",
        "hits-production",
    ]:
        assert parse_index_name("hits", name) is None, name


@pytest.mark.parametrize(
    ("instant", "timezone", "day"),
    [
        (dt.datetime(2026, 11, 25, 23, 30, tzinfo=dt.UTC), "UTC", dt.date(2026, 11, 25)),
        (dt.datetime(2026, 11, 25, 23, 30, tzinfo=dt.UTC), "Europe/Paris", dt.date(2026, 11, 26)),
        (dt.datetime(2026, 11, 26, 3, 0, tzinfo=dt.UTC), "America/New_York", dt.date(2026, 11, 25)),
        # Across a DST change: 2026-03-29 01:30 UTC is 03:30 CEST in Paris.
        (dt.datetime(2026, 3, 28, 23, 30, tzinfo=dt.UTC), "Europe/Paris", dt.date(2026, 3, 29)),
    ],
)
def test_local_day(instant, timezone, day):
    assert local_day(instant, ZoneInfo(timezone)) == day


def test_template_is_derived_from_the_hit_document():
    template = index_template(Settings(index_prefix="metrics", environments=("prod", "dev_eu")))
    # One pattern per environment, and no alias: a pattern cannot tell `…-prod` from `…-prod-copy`'s lookalikes.
    assert template["index_patterns"] == ["metrics-*.*.*-prod", "metrics-*.*.*-dev_eu"]
    assert template["template"]["mappings"] == Hit._doc_type.mapping.to_dict()
    assert template["template"]["settings"] == {"number_of_shards": 1, "auto_expand_replicas": "0-1"}
    assert "aliases" not in template["template"]
    assert template_name("metrics") == "metrics-hits-template"


def test_a_longer_prefix_gets_a_higher_priority():
    # `hits-*.*.*-production` also matches `hits-eu-…-production`: equal priorities would be refused.
    assert index_template(Settings(index_prefix="hits-eu"))["priority"] > index_template(Settings())["priority"]


# Generated names and settings: whatever hitmetrics is configured with, it calls its own exactly the names it makes.
NAME_TEXT = st.text(alphabet="abz09_-.*,/ \nA", max_size=12)
ENVIRONMENT = st.from_regex(r"[a-z0-9][a-z0-9_]{0,6}", fullmatch=True)


@given(prefix=NAME_TEXT, environments=st.lists(NAME_TEXT, min_size=0, max_size=3))
def test_settings_admit_only_names_that_stay_in_the_pattern(prefix, environments):
    try:
        settings = Settings(index_prefix=prefix, environments=tuple(environments))
    except ConfigError:
        return
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", prefix) and "\n" not in prefix
    for environment in settings.environments:
        assert re.fullmatch(r"[a-z0-9][a-z0-9_]*", environment)
        name = index_name(prefix, DAY, environment)
        assert parse_index_name(prefix, name) == (DAY, environment)
        assert is_own_index(settings, name)
        patterns = index_template(settings)["index_patterns"]
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@given(
    environments=st.lists(ENVIRONMENT, min_size=1, max_size=3, unique=True),
    day=st.dates(dt.date(1000, 1, 1), dt.date(9998, 12, 31)),
    edit=st.sampled_from(["-copy", "_keep", "x", "-", ".1", "\n", " "]),
    other=ENVIRONMENT,
)
def test_only_our_exact_names_are_ours(environments, day, edit, other):
    settings = Settings(index_prefix="hits", environments=tuple(environments))
    name = index_name("hits", day, environments[0])
    assert is_own_index(settings, name)
    assert not is_own_index(settings, name + edit)  # a user's copy, or an environment not configured
    assert is_own_index(settings, index_name("hits", day, other)) == (other in environments)
    assert not is_own_index(settings, "hits-eu-" + name.removeprefix("hits-"))
    # The template gives our mapping to none of the edited names that end otherwise than an environment.
    if not (name + edit).endswith(tuple(f"-{e}" for e in environments)):
        patterns = index_template(settings)["index_patterns"]
        assert not any(fnmatch.fnmatchcase(name + edit, pattern) for pattern in patterns)


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [("0-1", ("0-1", None)), ("1-all", ("1-all", None)), ("1", ("false", 1))],
)
def test_the_template_s_replicas_follow_the_setting(replicas, expected):
    template = index_template(Settings(replicas=replicas))["template"]["settings"]
    assert (template.get("auto_expand_replicas"), template.get("number_of_replicas")) == expected
