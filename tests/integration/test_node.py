"""The real Elasticsearch node does what hitmetrics needs from the server core (the foundation's fact 4)."""

from __future__ import annotations

import datetime as dt
import threading

from elasticsearch import Elasticsearch, helpers


def test_info_and_ping(es: Elasticsearch) -> None:
    info = es.info()
    assert info["version"]["number"] == "8.19.21"
    assert info.meta.headers["X-Elastic-Product"] == "Elasticsearch"
    assert es.ping() is True


def _mapping() -> dict:
    return {
        "dynamic": "strict",
        "properties": {
            "page": {"type": "keyword"},
            "datetime": {"type": "date"},
            "user_id": {"type": "integer"},
            "environment": {"type": "keyword"},
        },
    }


def test_template_bulk_alias_count_cat(es: Elasticsearch, index_prefix: str) -> None:
    es.indices.put_index_template(
        name=f"{index_prefix}-template",
        index_patterns=[f"{index_prefix}-*"],
        template={
            "settings": {"number_of_shards": 1, "auto_expand_replicas": "0-1"},
            "mappings": _mapping(),
            "aliases": {f"{index_prefix}-all": {}},
        },
    )
    docs = [
        {"_index": f"{index_prefix}-a", "_id": str(i), "page": f"/p{i % 7}", "user_id": i % 13,
         "datetime": f"2026-03-01T00:{i % 60:02d}:00Z", "environment": "production"}
        for i in range(500)
    ]  # fmt: skip
    ok, errors = helpers.bulk(es, docs[:250], refresh=True)
    assert (ok, errors) == (250, [])
    results = list(helpers.parallel_bulk(es, docs[250:], thread_count=2, chunk_size=50))
    assert all(success for success, _ in results)
    es.indices.refresh(index=f"{index_prefix}-a")
    assert es.count(index=f"{index_prefix}-all")["count"] == 500
    assert es.indices.get_mapping(index=f"{index_prefix}-a")[f"{index_prefix}-a"]["mappings"]["dynamic"] == "strict"
    rows = es.cat.indices(index=f"{index_prefix}-*", format="json")
    assert [row["index"] for row in rows] == [f"{index_prefix}-a"]
    assert rows[0]["health"] == "green"


def test_pit_search_after_histogram_composite_cardinality(es: Elasticsearch, index_prefix: str) -> None:
    index = f"{index_prefix}-h"
    es.indices.create(index=index, mappings=_mapping(), settings={"number_of_replicas": 0})
    start = dt.datetime(2026, 10, 25, 0, 0, tzinfo=dt.UTC)  # Europe/Berlin leaves summer time at 01:00 UTC
    docs = [
        {"_index": index, "page": f"/p{i % 3}", "user_id": i % 5, "environment": "staging",
         "datetime": (start + dt.timedelta(minutes=10 * i)).isoformat()}
        for i in range(144)
    ]  # fmt: skip
    helpers.bulk(es, docs, refresh=True)

    pit = es.open_point_in_time(index=index, keep_alive="1m")["id"]
    seen, after = [], None
    while True:
        page = es.search(
            pit={"id": pit, "keep_alive": "1m"}, size=50, sort=[{"datetime": "asc"}, {"_shard_doc": "asc"}],
            search_after=after,
        )["hits"]["hits"]  # fmt: skip
        if not page:
            break
        seen += page
        after = page[-1]["sort"]
    es.close_point_in_time(id=pit)
    assert len(seen) == 144

    aggs = es.search(
        index=index,
        size=0,
        aggs={
            "local": {"date_histogram": {"field": "datetime", "fixed_interval": "30m", "time_zone": "Europe/Berlin"},
                      "aggs": {"users": {"cardinality": {"field": "user_id", "precision_threshold": 40000}}}},
            "pages": {"composite": {"size": 2, "sources": [{"page": {"terms": {"field": "page"}}}]}},
        },
    )["aggregations"]  # fmt: skip
    buckets = aggs["local"]["buckets"]
    assert len(buckets) == 48 and sum(b["doc_count"] for b in buckets) == 144
    assert buckets[0]["key_as_string"].endswith("+02:00") and buckets[-1]["key_as_string"].endswith("+01:00")
    assert all(b["users"]["value"] <= 5 for b in buckets)
    assert len(aggs["pages"]["buckets"]) == 2 and "after_key" in aggs["pages"]


def test_airflow_connection_gives_a_working_client(es_url: str, monkeypatch) -> None:
    from urllib.parse import urlsplit

    from airflow.providers.elasticsearch.hooks.elasticsearch import ElasticsearchSQLHook

    url = urlsplit(es_url)
    monkeypatch.setenv("AIRFLOW_CONN_TEST_ES", f"elasticsearch://{url.hostname}:{url.port}?scheme=http")
    client = ElasticsearchSQLHook(elasticsearch_conn_id="test_es").get_conn().es
    assert client.info()["version"]["number"] == "8.19.21"


def test_concurrent_clients(es: Elasticsearch) -> None:
    errors: list[Exception] = []

    def ping() -> None:
        try:
            assert es.cluster.health()["status"] in ("green", "yellow")
        except Exception as error:  # noqa: BLE001 - collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=ping) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
