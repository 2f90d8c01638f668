"""Daily environment indexes: names, the composable template derived from `Hit`, aliases, creation, retention.

hitmetrics' own indexes are exactly `<prefix>-YYYY.MM.DD-<env>` for a configured environment (`is_own_index`):
nothing hitmetrics deletes, writes or tunes is ever anything else, even an index that shares the prefix, the
pattern or the alias (a user's `hits-2026.05.10-production-copy`, an environment no longer configured).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from elasticsearch import Elasticsearch

from hitmetrics.config import ENVIRONMENT_NAME, Settings
from hitmetrics.model import Hit

log = logging.getLogger(__name__)

# Keeps URLs of multi-index requests well under Elasticsearch's 4 KB request-line limit.
_NAMES_PER_REQUEST = 50


def index_name(prefix: str, day: dt.date, environment: str) -> str:
    """`<prefix>-YYYY.MM.DD-<env>`; refuses environment names that could escape that pattern."""
    if not ENVIRONMENT_NAME.fullmatch(environment):
        raise ValueError(f"{environment!r} is not a valid environment name for an index")
    return f"{prefix}-{day.year:04d}.{day.month:02d}.{day.day:02d}-{environment}"


def parse_index_name(prefix: str, name: str) -> tuple[dt.date, str] | None:
    """(day, environment) of one of our daily indexes, None for any other name."""
    match = re.fullmatch(rf"{re.escape(prefix)}-(\d{{4}})\.(\d{{2}})\.(\d{{2}})-(.+)", name)
    if not match or not ENVIRONMENT_NAME.fullmatch(match[4]):
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3])), match[4]
    except ValueError:
        return None


def is_own_index(settings: Settings, name: str) -> bool:
    """Whether `name` is one of hitmetrics' daily indexes for `settings` (its prefix, a configured environment)."""
    parsed = parse_index_name(settings.index_prefix, name)
    return parsed is not None and parsed[1] in settings.environments


def local_day(instant: dt.datetime, tz: ZoneInfo) -> dt.date:
    """The reporting day an aware instant belongs to in time zone `tz`."""
    return instant.astimezone(tz).date()


def template_name(prefix: str) -> str:
    return f"{prefix}-hits-template"


def index_settings(settings: Settings) -> dict[str, Any]:
    """The daily indexes' settings: `Hit`'s, with the replicas of `HITS_ES_REPLICAS` (a count, or a range such as
    the default `0-1`, which Elasticsearch fits to the nodes there are)."""
    values = dict(Hit._index.to_dict()["settings"])
    values.pop("number_of_replicas", None)
    if "-" in settings.replicas:
        values["auto_expand_replicas"] = settings.replicas
    else:
        values["auto_expand_replicas"] = "false"
        values["number_of_replicas"] = int(settings.replicas)
    return values


def index_template(settings: Settings) -> dict[str, Any]:
    """The composable index template body for `settings.index_prefix`, derived from the `Hit` document.

    Its patterns name each configured environment, so that a name ending otherwise (`…-production-copy`) never
    gets its mapping. It gives no alias: a pattern can only approximate our names (`*` also matches `-`), so the
    aliases are given by `create_index`, which knows the exact name.
    """
    prefix = settings.index_prefix
    body = Hit._index.to_dict()
    return {
        "index_patterns": [f"{prefix}-*.*.*-{environment}" for environment in settings.environments],
        # Overlapping patterns need distinct priorities (`hits-*` also matches `hits-eu-*`): the longer prefix wins.
        "priority": 100 + len(prefix),
        "template": {"settings": index_settings(settings), "mappings": body["mappings"]},
        "_meta": {"managed_by": "hitmetrics", "description": "daily environment hit indexes"},
    }


def ensure_template(es: Elasticsearch, settings: Settings) -> None:
    """Create or update the index template (idempotent: PUT replaces it with the same body)."""
    es.indices.put_index_template(name=template_name(settings.index_prefix), **index_template(settings))


def create_indexes(
    es: Elasticsearch, settings: Settings, days: Iterable[dt.date], environments: Iterable[str] | None = None
) -> list[str]:
    """Make sure the template and the index of every (day, environment) exist; returns the names it created.

    Environments default to `settings.environments`. Safe to repeat and to race with another creator.
    """
    ensure_template(es, settings)
    wanted = list(environments if environments is not None else settings.environments)
    created = []
    for day in sorted(set(days)):
        for environment in wanted:
            if create_index(es, settings.index_prefix, day, environment):
                created.append(index_name(settings.index_prefix, day, environment))
    if created:
        log.info("created %d index(es): %s", len(created), ", ".join(created))
    return created


def create_index(
    es: Elasticsearch, prefix: str, day: dt.date, environment: str, settings: dict[str, str] | None = None
) -> bool:
    """Create one daily index with its aliases unless it exists; True when this call created it.

    The template (`ensure_template`) must exist first: it holds the mapping and the `<prefix>` alias. `settings`
    override the template's for a new index.
    """
    name = index_name(prefix, day, environment)
    # The aliases come with the exact name here, never from the template's pattern (see `index_template`).
    aliases = [prefix, f"{prefix}-{environment}"]
    response = es.options(ignore_status=400).indices.create(
        index=name, aliases={alias: {} for alias in aliases}, settings=settings
    )
    if response.meta.status == 200:
        return True
    if response.body.get("error", {}).get("type") == "resource_already_exists_exception":
        # Made by someone else, e.g. by a write that created it, or by an older version: it is ours by its name,
        # and gets its aliases and the fields added since (a mapping only grows: `user_key`).
        es.indices.update_aliases(actions=[{"add": {"index": name, "alias": alias}} for alias in aliases])
        es.indices.put_mapping(index=name, **Hit._index.to_dict()["mappings"])
        return False
    raise RuntimeError(f"creating index {name} failed: {response.body.get('error')}")


def day_indexes(es: Elasticsearch, settings: Settings, day: dt.date) -> list[str]:
    """The existing indexes of `day` of every configured environment."""
    names = [index_name(settings.index_prefix, day, environment) for environment in settings.environments]
    found = es.indices.get(index=",".join(names), ignore_unavailable=True, allow_no_indices=True, features="aliases")
    return [name for name in names if name in found]


def hit_indexes(es: Elasticsearch, prefix: str) -> dict[str, tuple[dt.date, str]]:
    """Every existing daily index of `prefix`, by name, with its (day, environment)."""
    resolved = es.indices.resolve_index(name=f"{prefix}-*", expand_wildcards="open,closed")
    names = (index["name"] for index in resolved["indices"])
    return {name: parsed for name in names if (parsed := parse_index_name(prefix, name))}


def foreign_behind_alias(es: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    """Query clauses that keep a search of the `<prefix>` alias to hitmetrics' own indexes (`is_own_index`).

    Usually none are needed. An index that got the alias otherwise (by hand, or from the pattern of an older
    template) is left out, and named in a warning: it is never written or deleted from.
    """
    alias = settings.index_prefix
    behind = es.options(ignore_status=404).indices.get_alias(name=alias)
    foreign = sorted(name for name in (behind if behind.meta.status == 200 else {}) if not is_own_index(settings, name))
    if not foreign:
        return []
    log.warning(
        "left alone: %d index(es) behind alias %s that are not hitmetrics' daily indexes of HITS_ENVIRONMENTS: %s "
        "(remove the alias from them to silence this)", len(foreign), alias, ", ".join(foreign)
    )  # fmt: skip
    return [{"terms": {"_index": foreign}}]


def delete_expired_indexes(es: Elasticsearch, settings: Settings, today: dt.date) -> list[str]:
    """Delete the daily indexes whose day is more than `retention_days` before `today`; returns their names.

    With `retention_days` unset everything is kept. Only hitmetrics' own indexes (`is_own_index`) are considered:
    other names that merely share the prefix, and the indexes of environments that are not configured (whose data
    hitmetrics no longer knows about), are never touched.
    """
    if settings.retention_days is None:
        return []
    oldest_kept = today - dt.timedelta(days=settings.retention_days)
    found = hit_indexes(es, settings.index_prefix)
    expired = sorted(name for name, (day, _) in found.items() if day < oldest_kept and is_own_index(settings, name))
    for start in range(0, len(expired), _NAMES_PER_REQUEST):
        es.indices.delete(index=",".join(expired[start : start + _NAMES_PER_REQUEST]))
    if expired:
        log.info("deleted %d index(es) older than %s: %s", len(expired), oldest_kept, ", ".join(expired))
    return expired
