import datetime as dt

import pytest
from elasticsearch import BadRequestError

from hitmetrics.config import Settings
from hitmetrics.indexes import create_indexes, delete_expired_indexes, ensure_template, hit_indexes, template_name

DAY = dt.date(2026, 11, 25)


@pytest.fixture
def settings(index_prefix):
    return Settings(index_prefix=index_prefix, environments=("production", "staging"), retention_days=2)


def test_create_indexes_with_template_and_aliases(es, settings, index_prefix):
    created = create_indexes(es, settings, [DAY, DAY + dt.timedelta(days=1)])
    assert created == [
        f"{index_prefix}-2026.11.25-production",
        f"{index_prefix}-2026.11.25-staging",
        f"{index_prefix}-2026.11.26-production",
        f"{index_prefix}-2026.11.26-staging",
    ]
    index = f"{index_prefix}-2026.11.25-staging"
    info = es.indices.get(index=index)[index]
    assert set(info["aliases"]) == {index_prefix, f"{index_prefix}-staging"}
    assert info["mappings"]["dynamic"] == "strict"
    assert info["mappings"]["properties"]["user_id"] == {"type": "integer"}
    assert info["settings"]["index"]["number_of_shards"] == "1"
    assert info["settings"]["index"]["auto_expand_replicas"] == "0-1"
    assert set(es.indices.get_alias(name=f"{index_prefix}-production")) == {
        f"{index_prefix}-2026.11.25-production",
        f"{index_prefix}-2026.11.26-production",
    }
    assert len(es.indices.get_alias(name=index_prefix)) == 4


def test_create_indexes_is_idempotent(es, settings, index_prefix):
    assert create_indexes(es, settings, [DAY], ["staging"]) == [f"{index_prefix}-2026.11.25-staging"]
    assert create_indexes(es, settings, [DAY], ["staging"]) == []
    assert create_indexes(es, settings, [DAY]) == [f"{index_prefix}-2026.11.25-production"]
    assert set(hit_indexes(es, index_prefix)) == {
        f"{index_prefix}-2026.11.25-staging",
        f"{index_prefix}-2026.11.25-production",
    }


def test_the_mapping_is_strict(es, settings, index_prefix):
    create_indexes(es, settings, [DAY], ["production"])
    with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
        es.index(index=f"{index_prefix}-2026.11.25-production", document={"page": "/", "referrer": "x"})


def test_the_template_applies_to_indexes_created_elsewhere(es, settings, index_prefix):
    ensure_template(es, settings)
    assert es.indices.exists_index_template(name=template_name(index_prefix))
    # A write that auto-creates one of our indexes still gets the mapping; creating it then adds its aliases.
    name = f"{index_prefix}-2026.11.27-production"
    es.index(index=name, document={"page": "/"}, refresh=True)
    assert es.indices.get(index=name)[name]["mappings"]["dynamic"] == "strict"
    assert create_indexes(es, settings, [dt.date(2026, 11, 27)], ["production"]) == []
    assert set(es.indices.get(index=name)[name]["aliases"]) == {index_prefix, f"{index_prefix}-production"}


def test_foreign_indexes_that_look_like_ours_get_neither_mapping_nor_alias(es, settings, index_prefix):
    ensure_template(es, settings)
    for foreign in [f"{index_prefix}-2026.05.10-production-copy", f"{index_prefix}-2026.05.10-retired"]:
        es.index(index=foreign, document={"page": "/", "note": "a user's own field"}, refresh=True)
        info = es.indices.get(index=foreign)[foreign]
        assert info["aliases"] == {}
        assert "dynamic" not in info["mappings"]


def test_retention_deletes_only_expired_daily_indexes(es, settings, index_prefix):
    days = [DAY - dt.timedelta(days=n) for n in range(5)]
    create_indexes(es, settings, days)
    # Names that merely share the prefix, and environments that are not configured, are never touched.
    foreign = [f"{index_prefix}-archive", f"{index_prefix}-2020.01.01-production-copy",
               f"{index_prefix}-2020.01.01-production_keep", f"{index_prefix}-2020.01.01-retired"]  # fmt: skip
    for name in foreign:
        es.indices.create(index=name)
    deleted = delete_expired_indexes(es, settings, today=DAY)
    assert deleted == [
        f"{index_prefix}-2026.11.21-production",
        f"{index_prefix}-2026.11.21-staging",
        f"{index_prefix}-2026.11.22-production",
        f"{index_prefix}-2026.11.22-staging",
    ]
    remaining = set(es.indices.get(index=f"{index_prefix}-*"))
    assert remaining == {
        *foreign,
        *(f"{index_prefix}-2026.11.{day}-{env}" for day in (23, 24, 25) for env in ("production", "staging")),
    }
    assert delete_expired_indexes(es, settings, today=DAY) == []


def test_without_retention_everything_is_kept(es, settings, index_prefix):
    keep_all = Settings(index_prefix=index_prefix, environments=("production",))
    create_indexes(es, keep_all, [dt.date(2001, 1, 1)])
    assert delete_expired_indexes(es, keep_all, today=DAY) == []
    assert list(hit_indexes(es, index_prefix)) == [f"{index_prefix}-2001.01.01-production"]
