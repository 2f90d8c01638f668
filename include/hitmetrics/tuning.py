"""Index settings while a load writes (no refresh), and putting back the ones they replaced, also after a
failure or a load that was killed."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from elasticsearch import ApiError, ConnectionTimeout, Elasticsearch
from elasticsearch import ConnectionError as ESConnectionError

from hitmetrics.bulk import LoadError
from hitmetrics.config import Settings
from hitmetrics.indexes import index_settings

log = logging.getLogger(__name__)

# Index settings while a load writes: no refresh, the usual bulk-load tuning (replicas are left as they are, see
# above). The settings they replace are put back afterwards; settings found equal to these were left by a load
# that was killed before it could restore them, and are replaced by the template's.
LOAD_SETTINGS = {"index.refresh_interval": "-1"}


RESTORE_BATCH = 50  # index names per settings request, well under any URL length limit


IndexSettings = dict[str, str | None]


def _template_settings(settings: Settings) -> IndexSettings:
    """The template's values of `LOAD_SETTINGS` (None: Elasticsearch's default)."""
    template = index_settings(settings)
    return {name: _text(template.get(name.removeprefix("index."))) for name in LOAD_SETTINGS}


class _Tuner:
    """Tunes the indexes a shard writes to with `LOAD_SETTINGS`, recording each one's previous settings."""

    def __init__(self, es: Elasticsearch, settings: Settings) -> None:
        self.es = es
        self.previous: dict[str, IndexSettings] = {}
        self.template = _template_settings(settings)

    def apply(self, index: str) -> None:
        response = self.es.indices.get_settings(index=index, name=list(LOAD_SETTINGS), flat_settings=True)
        current = response.body.get(index, {}).get("settings", {})  # absent when none of them is set
        previous = {name: current.get(name) for name in LOAD_SETTINGS}
        # Recorded before the change, so a change that fails half way is still undone. Settings equal to the load's
        # were left by another shard of this load or by a killed one: the template's come back.
        self.previous[index] = self.template if previous == LOAD_SETTINGS else previous
        self.es.indices.put_settings(index=index, settings=LOAD_SETTINGS)

    def created(self, index: str) -> None:
        """`index` was just created with `LOAD_SETTINGS`: it gets the template's settings afterwards."""
        self.previous[index] = self.template


def restore_settings(es: Elasticsearch, previous: Mapping[str, IndexSettings], *, failing: bool = False) -> None:
    """Put each index's `previous` settings back, one request per group of indexes alike.

    A failure to restore fails a load that went well; while a load is `failing` it is logged, so the first error
    stays the one reported, and the next load of those indexes repairs them (it finds `LOAD_SETTINGS` there).
    """
    failed = []
    groups: dict[tuple[tuple[str, str | None], ...], list[str]] = {}
    for index, values in previous.items():
        groups.setdefault(tuple(sorted(values.items())), []).append(index)
    for values, names in groups.items():
        for start in range(0, len(names), RESTORE_BATCH):
            batch = ",".join(names[start : start + RESTORE_BATCH])
            try:
                es.indices.put_settings(index=batch, settings=dict(values))
            except (ApiError, ESConnectionError, ConnectionTimeout) as error:
                failed.append(f"{batch}: {error}")
    if failed and not failing:
        raise LoadError(f"could not restore the index settings after the load: {'; '.join(failed)}")
    for failure in failed:
        log.error("could not restore the index settings of %s", failure)


def _text(value: object) -> str | None:
    return None if value is None else str(value).lower()
