"""Exact unique users on the real node: ids whose hashes collide, rows past linear counting, ids over the whole
integer range, users across environments, and days loaded before `user_key`."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from elasticsearch import Elasticsearch, helpers

from hitmetrics import indexes, users
from hitmetrics.aggregate import ALL, ChecksFailed, aggregate_partition, check_partition
from hitmetrics.model import MAX_USER_ID
from hitmetrics.model import Hit as HitDocument

from .test_aggregate import Hit, expected_rows, make_index

DAY = dt.date(2026, 11, 25)
NOON = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def assert_exact(es: Elasticsearch, index: str, hits: list[Hit]) -> None:
    aggs = aggregate_partition(es, index, DAY, "production", "UTC")
    expected = expected_rows(hits, DAY, "UTC")
    assert set(aggs.by_page_30m) == expected["page_30m"]
    assert set(aggs.by_env_30m) == expected["env_30m"]
    assert set(aggs.by_page_daily) == expected["page_daily"]
    assert set(aggs.by_env_daily) == expected["env_daily"]
    assert check_partition(aggs).passed


def test_ids_whose_hashes_collide_count_as_two(es: Elasticsearch, index_prefix: str) -> None:
    index = make_index(es, index_prefix, DAY, "production", [Hit("/home", NOON, 2083), Hit("/home", NOON, 5752)])
    estimate = es.search(
        index=index, size=0, aggs={"u": {"cardinality": {"field": "user_id", "precision_threshold": 40_000}}}
    )["aggregations"]["u"]["value"]
    assert estimate == 1  # why user_key exists

    aggs = aggregate_partition(es, index, DAY, "production", "UTC")
    assert {row.unique_users for rows in aggs.tables().values() for row in rows} == {2}


def test_rows_past_linear_counting_are_counted_in_parts(es: Elasticsearch, index_prefix: str) -> None:
    rng = random.Random(5)
    # One half hour with more hits and users than linear counting holds, colliding ids among them, repeat visitors.
    crowd = [Hit("/big", NOON + dt.timedelta(seconds=rng.randrange(1800)), n) for n in range(users.SPLIT + 6_000)]
    crowd += [Hit("/big", NOON, rng.randrange(users.SPLIT)) for _ in range(3_000)]
    quiet = [Hit("/small", NOON + dt.timedelta(hours=3), n) for n in (2083, 5752, 7, 8)]
    hits = crowd + quiet
    assert_exact(es, make_index(es, index_prefix, DAY, "production", hits), hits)


def test_ids_spread_over_the_whole_integer_range(es: Elasticsearch, index_prefix: str) -> None:
    rng = random.Random(11)
    ids = rng.sample(range(MAX_USER_ID + 1), users.SPLIT + 2_000)
    hits = [Hit("/wide", NOON + dt.timedelta(minutes=n % 600), user) for n, user in enumerate(ids)]
    hits += [Hit("/few", NOON, user) for user in (0, users.BLOCK, 2 * users.BLOCK, MAX_USER_ID)]
    assert_exact(es, make_index(es, index_prefix, DAY, "production", hits), hits)


def test_a_user_in_two_environments_counts_once_across_them(es: Elasticsearch, index_prefix: str) -> None:
    production = [Hit("/", NOON, 1), Hit("/", NOON, 2), Hit("/", NOON + dt.timedelta(hours=1), 3)]
    staging = [Hit("/", NOON, 1, "staging"), Hit("/", NOON, 4, "staging")]
    names = [
        make_index(es, index_prefix, DAY, "production", production),
        make_index(es, index_prefix, DAY, "staging", staging),
    ]
    aggs = aggregate_partition(es, ",".join(names), DAY, ALL, "UTC")

    assert [(row.hits, row.unique_users) for row in aggs.by_all_daily] == [(5, 4)]
    assert [(row.bucket_start, row.hits, row.unique_users) for row in aggs.by_all_30m] == [
        (NOON, 4, 3),
        (NOON + dt.timedelta(hours=1), 1, 1),
    ]
    assert not aggs.by_env_daily and check_partition(aggs).passed


def test_a_day_loaded_before_user_key_is_refused_not_estimated(es: Elasticsearch, index_prefix: str) -> None:
    index = make_index(es, index_prefix, DAY, "production", [Hit("/", NOON, 1)])
    old = {"page": "/", "datetime": NOON.isoformat(), "user_id": 2, "environment": "production"}
    helpers.bulk(es, [{"_index": index, **old, "source_file": "old.jsonl", "load_id": "old"}], refresh=True)
    with pytest.raises(ChecksFailed, match="1 of 2 hits .* have no user_key .* load their landing days again"):
        aggregate_partition(es, index, DAY, "production", "UTC")


def test_an_index_made_before_user_key_gets_the_field(es: Elasticsearch, index_prefix: str) -> None:
    name = indexes.index_name(index_prefix, DAY, "production")
    mappings = HitDocument._index.to_dict()["mappings"]
    del mappings["properties"]["user_key"]
    es.indices.create(index=name, mappings=mappings)
    assert not indexes.create_index(es, index_prefix, DAY, "production")
    assert "user_key" in es.indices.get_mapping(index=name)[name]["mappings"]["properties"]
