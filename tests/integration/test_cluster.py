"""hitmetrics on a 3-node Elasticsearch cluster (`tools.esnode --nodes 3`): replicas, exact aggregations, and a
node killed with -9 in the middle of a load.

The cluster is this module's own, since a test kills one of its nodes.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from hitmetrics import aggregate, bulk, indexes, load
from hitmetrics.config import Settings
from hitmetrics.sample import generate_day
from tools import esnode
from tools.testing import service_missing

DAY = dt.date(2026, 11, 25)
NODES = 3


@pytest.fixture(scope="module")
def cluster():
    data_dir = Path(tempfile.mkdtemp(prefix="hitmetrics-cluster-"))
    try:
        nodes = esnode.start_cluster(NODES, esnode.free_cluster_port(NODES), data_dir)
    except esnode.NodeError as error:
        service_missing(f"cannot start a {NODES}-node cluster: {error}")
    yield data_dir, nodes
    esnode.stop_cluster(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def client(nodes: list[esnode.NodeInfo]) -> Elasticsearch:
    """A client that knows every node, as `HITS_ES_URL=url1,url2,url3` gives the DAGs."""
    settings = Settings(es_url=",".join(node.url for node in nodes))
    return Elasticsearch(settings.es_hosts, request_timeout=60, retry_on_timeout=True)


def cluster_settings(tmp_path: Path, prefix: str, **more) -> Settings:
    return Settings(data_dir=tmp_path / "data", landing=str(tmp_path / "landing"), index_prefix=prefix, **more)


def test_the_cluster_has_every_node_and_its_indexes_a_replica(cluster, tmp_path: Path) -> None:
    _, nodes = cluster
    es = client(nodes)
    assert len(nodes) == NODES
    assert {node["name"] for node in es.cat.nodes(format="json")} == {f"node-{n}" for n in range(1, NODES + 1)}
    settings = cluster_settings(tmp_path, "replicated", replicas="1")
    indexes.create_indexes(es, settings, [DAY])
    es.cluster.health(index="replicated-*", wait_for_status="green", timeout="60s")
    for name in es.indices.get(index="replicated-*"):
        flat = es.indices.get_settings(index=name, flat_settings=True)[name]["settings"]
        assert (flat["index.number_of_replicas"], flat["index.auto_expand_replicas"]) == ("1", "false")
        copies = es.cat.shards(index=name, format="json")
        assert sorted(c["prirep"] for c in copies) == ["p", "r"] and len({c["node"] for c in copies}) == 2
    # The default, 0-1, also gives one replica on a cluster (and none on one node).
    default = cluster_settings(tmp_path, "expanded")
    indexes.create_indexes(es, default, [DAY])
    es.cluster.health(index="expanded-*", wait_for_status="green", timeout="60s")
    assert {len(es.cat.shards(index=name, format="json")) for name in es.indices.get(index="expanded-*")} == {2}


def test_a_load_aggregates_on_the_cluster_as_on_one_node(cluster, es: Elasticsearch, tmp_path: Path) -> None:
    _, nodes = cluster
    on_cluster = client(nodes)
    sample = generate_day(tmp_path / "landing", DAY, hits=20_000, pages=200, users=1_500, bad_lines=5)
    results = []
    for target, prefix in ((on_cluster, "same"), (es, f"same{threading.get_ident()}")):
        settings = cluster_settings(tmp_path, prefix)
        report = load.load_landing_day(target, settings, DAY)
        assert (report.loaded, report.rejected) == (sample.good, sample.bad)
        partitions = [(indexes.index_name(prefix, day, env), day, env) for day, env in sorted(report.partitions)]
        rows = list(aggregate.aggregate_partitions(target, partitions, settings.timezone))
        results.append([(r.day, r.environment, r.es_count, r.by_page_30m, r.by_env_daily) for r in rows])
        if target is es:
            for name in es.indices.get(index=f"{prefix}-*"):
                es.indices.delete(index=name)
    assert results[0] == results[1]


def test_a_node_killed_mid_load_loses_nothing_and_comes_back(cluster, tmp_path: Path, monkeypatch) -> None:
    data_dir, nodes = cluster
    es = client(nodes)
    monkeypatch.setattr(load, "CHUNK_BYTES", 256 << 10)  # many small requests, so the kill lands mid-load
    monkeypatch.setattr(bulk, "INITIAL_BACKOFF_S", 0.2)
    settings = cluster_settings(tmp_path, "survivor", replicas="1")
    sample = generate_day(tmp_path / "landing", DAY, hits=150_000, pages=300, users=5_000, bad_lines=0)
    indexes.create_indexes(es, settings, [DAY - dt.timedelta(days=1), DAY, DAY + dt.timedelta(days=1)])
    es.cluster.health(index="survivor-*", wait_for_status="green", timeout="60s")
    # The node with the primary of the day's biggest index: its writes must fail over to the replica.
    (primary,) = [c["node"] for c in es.cat.shards(index=f"survivor-{DAY:%Y.%m.%d}-production", format="json")
                  if c["prirep"] == "p"]  # fmt: skip
    victim = data_dir / primary

    outcome: dict[str, object] = {}
    loading = threading.Event()

    def run_load() -> None:
        try:
            outcome["report"] = load.load_landing_day(es, settings, DAY, progress=lambda p: p.loaded and loading.set())
        except Exception as error:  # noqa: BLE001 - the outcome under test
            outcome["error"] = error

    loader = threading.Thread(target=run_load)
    loader.start()
    assert loading.wait(timeout=120)
    assert esnode.kill(victim) is not None
    assert not outcome, "the load ended before the node was killed: make the day bigger"
    loader.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert (report.read, report.loaded, report.rejected) == (sample.good, sample.good, 0)
    survivors = client([node for node in nodes if node.data_dir != victim])
    survivors.indices.refresh(index="survivor")
    # 0 lost, 0 duplicated (a document's id is its file and line), with the node gone.
    assert survivors.count(index="survivor")["count"] == sample.good
    for (day, env), written in report.partitions.items():
        assert survivors.count(index=indexes.index_name("survivor", day, env))["count"] == written

    esnode.start_cluster(0, data_dir=data_dir)  # brings back the killed node
    health = es.cluster.health(wait_for_status="green", wait_for_nodes=str(NODES), timeout="120s")
    assert (health["status"], health["number_of_nodes"]) == ("green", NODES)
    es.indices.refresh(index="survivor")
    assert es.count(index="survivor")["count"] == sample.good
