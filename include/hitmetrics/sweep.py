"""What a load leaves exact: the sweep of the documents the folder no longer contributes, and the reconciliation
of Elasticsearch's counts with what the load wrote."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
from elasticsearch import Elasticsearch

from hitmetrics.bulk import Action, LoadError, chunks_of, describe, send_chunks
from hitmetrics.config import Settings
from hitmetrics.indexes import index_name, parse_index_name
from hitmetrics.shards import LoadReport, Partition

log = logging.getLogger(__name__)


class ReconciliationError(LoadError):
    """Elasticsearch does not hold exactly what was loaded."""


SWEEP_PAGE = 5_000


def _sweep_stale(
    es: Elasticsearch,
    alias: str,
    scope: dict[str, Any],
    what: str,
    attempts: Sequence[str],
    foreign: list[dict[str, Any]],
) -> Counter[str]:
    """Delete every document of the load's `scope` (its landing folder, or its files) written by anything but the
    load's shard `attempts` (another load, a shard's failed attempt), in our own indexes only (`foreign` says which
    indexes behind the alias are not); returns the deletions per index."""
    query = {
        "bool": {
            "filter": [scope],
            "must_not": [{"terms": {"load_id": list(attempts)}}, *foreign],
        }
    }
    pit = es.open_point_in_time(index=alias, keep_alive="2m", ignore_unavailable=True)["id"]
    try:

        def stale() -> Iterator[Action]:
            nonlocal pit
            dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
            search_after = None
            while True:
                page = es.search(
                    pit={"id": pit, "keep_alive": "2m"},
                    query=query,
                    sort=["_shard_doc"],
                    search_after=search_after,
                    size=SWEEP_PAGE,
                    source=False,
                    track_total_hits=False,
                    allow_partial_search_results=False,  # a shard that cannot answer must not hide its stale docs
                )
                pit = page.get("pit_id", pit)
                hits = page["hits"]["hits"]
                for hit in hits:
                    index = hit["_index"]
                    yield index, dumps({"delete": {"_index": index, "_id": hit["_id"]}}, option=newline), None
                if len(hits) < SWEEP_PAGE:
                    return
                search_after = hits[-1]["sort"]

        deleted: Counter[str] = Counter()
        errors: list[dict[str, Any]] = []
        for chunk_deleted, chunk_errors in send_chunks(es, chunks_of(stale())):
            deleted.update(chunk_deleted)
            errors.extend(chunk_errors)
        if errors:
            raise LoadError(f"deleting {len(errors)} stale document(s) failed; first: {describe(errors[0])}")
    finally:
        es.options(ignore_status=404).close_point_in_time(id=pit)
    if deleted:
        log.info("deleted %d stale document(s) from %s: %s", deleted.total(), what, dict(deleted))
    return deleted


def _reconcile(
    es: Elasticsearch,
    settings: Settings,
    scope: dict[str, Any],
    what: str,
    attempts: Sequence[str],
    report: LoadReport,
    foreign: list[dict[str, Any]],
) -> None:
    """Check Elasticsearch's counts: per partition exactly what the load's shard `attempts` wrote, and nothing else
    from the load's `scope` (its folder, or its files) in our own indexes."""
    mismatches = []
    for (day, environment), expected in sorted(report.partitions.items()):
        name = index_name(settings.index_prefix, day, environment)
        query = {"bool": {"filter": [scope, {"terms": {"load_id": list(attempts)}}]}}
        found = _count(es, index=name, query=query)
        if found != expected:
            mismatches.append(f"{name}: {found} instead of {expected}")
    mine = {"bool": {"filter": [scope], "must_not": foreign}}
    total = _count(es, index=settings.index_prefix, query=mine, ignore_unavailable=True)
    if total != report.loaded:
        mismatches.append(f"all indexes: {total} documents from {what} instead of {report.loaded}")
    if mismatches:
        raise ReconciliationError(f"load {report.load_id} of {what} does not reconcile: {'; '.join(mismatches)}")


def _count(es: Elasticsearch, **request: Any) -> int:
    """A count that every shard answered (a count missing a shard whose node just died would be short)."""
    response = es.count(**request)
    if response["_shards"].get("failed"):
        raise ReconciliationError(f"{response['_shards']['failed']} shard(s) could not be counted: retry the load")
    return response["count"]


def _by_partition(prefix: str, per_index: Mapping[str, int]) -> dict[Partition, int]:
    partitions: dict[Partition, int] = {}
    for name, count in sorted(per_index.items()):
        partition = parse_index_name(prefix, name)
        if partition is None:  # never reached while the sweep keeps to our own indexes: a guard, not a path
            raise LoadError(f"index {name} behind alias {prefix} is not a daily hit index")
        partitions[partition] = count
    return partitions
