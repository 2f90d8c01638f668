"""The hit: its Elasticsearch document, its validated in-memory form, and the one validation every entry point uses."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from elasticsearch.dsl import Date, Document, Integer, Keyword, Long, MetaField

FIELDS = ("page", "datetime", "user_id", "environment")
MAX_PAGE_LENGTH = 2048
MAX_USER_ID = 2**31 - 1  # the Elasticsearch `integer` mapping
_MISSING = object()
# The years a hit may have: four digits keep index names in their pattern, and the margin of a year at each end
# lets any time zone shift a day without leaving them.
MIN_YEAR, MAX_YEAR = 1000, 9998
# Every other character is accepted in a page (control characters too, and published as they are); NUL is not, as
# PostgreSQL's text cannot hold it: one verdict for the value, whatever the rollup database.
NUL_IN_PAGE = "page contains a NUL character (U+0000), which the rollup database cannot store"
# The one datetime grammar (README, "Input"): RFC 3339's date and time, where seconds and the offset may be left
# out. Nothing else is a datetime, whichever way a record is read; `plain_utc` and the C fast path take a subset.
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(?:[Zz]|([+-])([0-9]{2}):?([0-9]{2}))?"
)
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The usual form, as shippers write it: `plain_utc` reads it without `parse_datetime`'s checks.
_PLAIN_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")
_INTEGER_TEXT = re.compile(r"(-?)([0-9]+)")


class Hit(Document):
    """A page hit as stored in the daily environment indexes; `index_template()` is derived from this class."""

    page = Keyword()
    datetime = Date()
    user_id = Integer()
    # What exact unique users count (`hitmetrics.users.user_key`): only its doc values are read.
    user_key = Long(index=False)
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


class OutOfRange(ValueError):
    """A day or instant outside the years a hit may have; the message says which and why, in one line."""


def check_day(day: dt.date, what: str = "day") -> dt.date:
    """`day` if a hit may fall on it (years `MIN_YEAR` to `MAX_YEAR`), else `OutOfRange`: the days around it, and
    its instants in any time zone, stay within what a datetime holds."""
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise OutOfRange(f"{what} {day} is outside the years {MIN_YEAR} to {MAX_YEAR}, the only ones a hit may have")
    return day


def user_id_range(first: int, width: int) -> dict[str, dict[str, int]]:
    """A range query of `width` user ids from `first`, clamped to the field's domain: a bound past 2³¹−1 is refused
    by Elasticsearch's `integer` field (`Value [...] is out of range for an integer`)."""
    return {"range": {"user_id": {"gte": max(first, 0), "lte": min(first + width - 1, MAX_USER_ID)}}}


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
    elif "\0" in page:
        problems.append(NUL_IN_PAGE)

    instant = raw.get("datetime", _MISSING)
    if instant is _MISSING:
        problems.append("datetime is missing")
    elif not isinstance(instant, str):
        problems.append(f"datetime {_shown(instant)} is not a date and time string")
    else:
        try:
            instant = parse_datetime(instant)
        except InvalidHit as error:
            problems.append(str(error))

    user_id = raw.get("user_id", _MISSING)
    if user_id is _MISSING:
        problems.append("user_id is missing")
    elif type(user_id) is not int:  # not isinstance: true/false are bools, a subclass of int
        problems.append(f"user_id {_shown(user_id)} is not an integer")
    elif not 0 <= user_id <= MAX_USER_ID:
        problems.append(f"user_id {user_id} is outside 0..{MAX_USER_ID}")

    environment = raw.get("environment", _MISSING)
    if environment is _MISSING:
        problems.append("environment is missing")
    elif not isinstance(environment, str) or environment not in environments:
        problems.append(f"environment {_shown(environment)} is not one of {', '.join(sorted(environments))}")

    if problems:
        raise InvalidHit("; ".join(problems))
    return HitRecord(page, instant, user_id, environment)  # type: ignore[arg-type]


def validate_text_hit(raw: Mapping[str, str], environments: Collection[str]) -> HitRecord:
    """`validate_hit` for values that are all strings (CSV cells, command-line arguments).

    `user_id` must then be written in ASCII digits ("42", "0042", "-3" is outside the range); "+42", " 42", "4.2",
    "true" or "" are not integers.
    """
    user_id = raw.get("user_id")
    if isinstance(user_id, str) and (number := text_user_id(user_id)) is not None:
        raw = {**raw, "user_id": number}
    return validate_hit(raw, environments)


def text_user_id(text: str) -> int | None:
    """The integer a text `user_id` is written as (ASCII digits, leading zeros allowed, a minus sign), else None.

    A value past 0..`MAX_USER_ID` by more than ten digits comes back as -1 or `MAX_USER_ID + 1`, for `validate_hit`
    to refuse: int() of a very long text would cost time or raise.
    """
    match = _INTEGER_TEXT.fullmatch(text)
    if match is None:
        return None
    sign, significant = match[1], match[2].lstrip("0") or "0"
    if len(significant) > 10:
        return -1 if sign else MAX_USER_ID + 1
    return -int(significant) if sign else int(significant)


def plain_utc(text: str) -> dt.datetime | None:
    """`text` as an aware UTC datetime when written the usual way (2026-11-25T10:15:00.123Z), else None.

    The loader's fast path: None decides nothing, `parse_datetime` then accepts the text or says what is wrong.
    What it accepts, it reads as `parse_datetime` does.
    """
    if _PLAIN_UTC.fullmatch(text):
        try:
            parsed = dt.datetime.fromisoformat(text)  # with "Z": aware and in UTC already
        except ValueError:
            return None
        if MIN_YEAR <= parsed.year <= MAX_YEAR:
            return parsed
    return None


def parse_datetime(text: str) -> dt.datetime:
    """A datetime of the one grammar (`_DATETIME`) as an aware UTC datetime; without an offset it means UTC.

    Fractions of a second past the sixth digit are dropped (a datetime holds microseconds).
    """
    match = _DATETIME.fullmatch(text)
    if match is None:
        if _DATE_ONLY.fullmatch(text):
            raise InvalidHit(f"datetime {_shorten(text)!r} has no time of day")
        raise InvalidHit(
            f"datetime {_shorten(text)!r} is not a date and time of the form YYYY-MM-DDTHH:MM[:SS[.fraction]]"
            "[Z or ±HH:MM]"
        )
    year, month, day, hour, minute, second, fraction, sign, offset_hours, offset_minutes = match.groups()
    if not MIN_YEAR <= int(year) <= MAX_YEAR:
        raise InvalidHit(f"datetime {_shorten(text)!r} is outside the years {MIN_YEAR} to {MAX_YEAR}")
    try:
        date = dt.date(int(year), int(month), int(day))
    except ValueError:
        raise InvalidHit(f"datetime {_shorten(text)!r} has an impossible date") from None
    # 24:00 and leap seconds (23:59:60) are refused: a datetime cannot hold them.
    if int(hour) > 23 or int(minute) > 59 or int(second or 0) > 59:
        raise InvalidHit(f"datetime {_shorten(text)!r} has an impossible time of day")
    offset = dt.timedelta(hours=int(offset_hours or 0), minutes=int(offset_minutes or 0))
    if int(offset_minutes or 0) > 59 or offset >= dt.timedelta(hours=24):
        raise InvalidHit(f"datetime {_shorten(text)!r} has an impossible UTC offset")
    zone = dt.timezone(-offset if sign == "-" else offset)
    time = dt.time(int(hour), int(minute), int(second or 0), int((fraction or "0")[:6].ljust(6, "0")), zone)
    return dt.datetime.combine(date, time).astimezone(dt.UTC)


def _shown(value: object) -> str:
    """A field's value in a reason as the record wrote it: JSON's words for what JSON decoded (`true`, `null`,
    `[1, 2]`), a string quoted, shortened."""
    if isinstance(value, str) or type(value) in (int, float):
        return _shorten(repr(value))
    try:
        return _shorten(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))
    except (TypeError, ValueError):
        return _shorten(repr(value))


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
