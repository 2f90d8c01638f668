"""The hit: its Elasticsearch document, its validated in-memory form, and the one validation every entry point uses."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from elasticsearch.dsl import Date, Document, Integer, Keyword, MetaField

FIELDS = ("page", "datetime", "user_id", "environment")
MAX_PAGE_LENGTH = 2048
MAX_USER_ID = 2**31 - 1  # the Elasticsearch `integer` mapping
_MISSING = object()
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,19}")


class Hit(Document):
    """A page hit as stored in the daily environment indexes; `index_template()` is derived from this class."""

    page = Keyword()
    datetime = Date()
    user_id = Integer()
    environment = Keyword()
    # Lineage: which landing file the hit came from (relative to the landing root) and which load last wrote it.
    source_file = Keyword()
    load_id = Keyword()

    class Meta:
        dynamic = MetaField("strict")

    class Index:
        name = "hits"
        settings = {"number_of_shards": 1, "auto_expand_replicas": "0-1"}


class HitRecord(NamedTuple):
    """A valid hit; `datetime` is aware and in UTC. A named tuple: cheap to make, and it unpacks into `ParsedHit`."""

    page: str
    datetime: dt.datetime
    user_id: int
    environment: str


class InvalidHit(ValueError):
    """A record that is not a valid hit; the message is a short reason for a human."""


def validate_hit(raw: Mapping[str, Any], environments: Collection[str]) -> HitRecord:
    """Check one decoded record (e.g. a JSON object) and return it as a `HitRecord`.

    Keys other than the four fields are ignored. Raises `InvalidHit` naming every problem found.
    """
    problems: list[str] = []
    page = raw.get("page", _MISSING)
    if page is _MISSING:
        problems.append("page is missing")
    elif not isinstance(page, str) or not page:
        problems.append("page must be a non-empty string")
    elif len(page) > MAX_PAGE_LENGTH:
        problems.append(f"page is longer than {MAX_PAGE_LENGTH} characters")

    instant = raw.get("datetime", _MISSING)
    if instant is _MISSING:
        problems.append("datetime is missing")
    elif not isinstance(instant, str):
        problems.append(f"datetime {_shorten(repr(instant))} is not an ISO-8601 string")
    else:
        try:
            instant = parse_datetime(instant)
        except InvalidHit as error:
            problems.append(str(error))

    user_id = raw.get("user_id", _MISSING)
    if user_id is _MISSING:
        problems.append("user_id is missing")
    elif type(user_id) is not int:  # not isinstance: true/false are bools, a subclass of int
        problems.append(f"user_id {_shorten(repr(user_id))} is not an integer")
    elif not 0 <= user_id <= MAX_USER_ID:
        problems.append(f"user_id {user_id} is outside 0..{MAX_USER_ID}")

    environment = raw.get("environment", _MISSING)
    if environment is _MISSING:
        problems.append("environment is missing")
    elif not isinstance(environment, str) or environment not in environments:
        problems.append(f"environment {_shorten(repr(environment))} is not one of {', '.join(sorted(environments))}")

    if problems:
        raise InvalidHit("; ".join(problems))
    return HitRecord(page, instant, user_id, environment)  # type: ignore[arg-type]


def validate_text_hit(raw: Mapping[str, str], environments: Collection[str]) -> HitRecord:
    """`validate_hit` for values that are all strings (CSV cells, command-line arguments).

    `user_id` must then be written as a whole number ("42"); "4.2", "true" or "" are not integers.
    """
    user_id = raw.get("user_id")
    # int() alone would also take "1_000" and non-ASCII digits, and not every space that strip() removes ("\x1d").
    if isinstance(user_id, str) and _INTEGER_TEXT.fullmatch(digits := user_id.strip()):
        raw = {**raw, "user_id": int(digits)}
    return validate_hit(raw, environments)


def plain_utc(text: str) -> dt.datetime | None:
    """`text` as an aware UTC datetime when written the usual way (2026-11-25T10:15:00.123Z), else None.

    The loader's fast path: None decides nothing, `parse_datetime` then accepts the text or says what is wrong.
    """
    if len(text) >= 20 and text[10] == "T" and text[-1] == "Z":
        try:
            parsed = dt.datetime.fromisoformat(text)  # with "Z": aware and in UTC already
        except ValueError:
            return None
        if 1000 <= parsed.year <= 9998:
            return parsed
    return None


def parse_datetime(text: str) -> dt.datetime:
    """An ISO-8601 date and time as an aware UTC datetime; without an offset it means UTC."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidHit(f"datetime {_shorten(text)!r} is not an ISO-8601 date and time") from None
    # fromisoformat also takes a bare date ("2026-11-25"); a hit needs its time of day.
    if "T" not in text and " " not in text and "t" not in text:
        raise InvalidHit(f"datetime {_shorten(text)!r} has no time of day")
    # Four-digit years keep index names in their pattern; the margin lets any time zone shift them a day.
    if not 1000 <= parsed.year <= 9998:
        raise InvalidHit(f"datetime {_shorten(text)!r} is outside the years 1000 to 9998")
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
