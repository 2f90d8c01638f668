import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from hitmetrics.config import Settings
from hitmetrics.indexes import index_name, index_template, local_day, parse_index_name, template_name
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
    template = index_template(Settings(index_prefix="metrics"))
    assert template["index_patterns"] == ["metrics-*.*.*-*"]
    assert template["template"]["mappings"] == Hit._doc_type.mapping.to_dict()
    assert template["template"]["settings"] == {"number_of_shards": 1, "auto_expand_replicas": "0-1"}
    assert template["template"]["aliases"] == {"metrics": {}}
    assert template_name("metrics") == "metrics-hits-template"


def test_a_longer_prefix_gets_a_higher_priority():
    # `hits-*.*.*-*` also matches `hits-eu-…`: equal priorities would be refused by Elasticsearch.
    assert index_template(Settings(index_prefix="hits-eu"))["priority"] > index_template(Settings())["priority"]
