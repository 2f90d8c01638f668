import datetime as dt

import pytest

from hitmetrics.model import MAX_PAGE_LENGTH, Hit, HitRecord, InvalidHit, validate_hit, validate_text_hit

ENVS = ("production", "staging", "development")


def hit(**overrides):
    raw = {"page": "/home", "datetime": "2026-11-25T10:15:00Z", "user_id": 42, "environment": "production"}
    raw.update(overrides)
    return {key: value for key, value in raw.items() if value is not ...}


def reason(raw, validate=validate_hit):
    with pytest.raises(InvalidHit) as caught:
        validate(raw, ENVS)
    return str(caught.value)


def test_a_valid_hit_becomes_a_utc_record():
    record = validate_hit(hit(extra="ignored"), ENVS)
    assert record == HitRecord("/home", dt.datetime(2026, 11, 25, 10, 15, tzinfo=dt.UTC), 42, "production")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T10:15:00", dt.datetime(2026, 11, 25, 10, 15, tzinfo=dt.UTC)),  # no offset means UTC
        ("2026-11-25T11:15:00+01:00", dt.datetime(2026, 11, 25, 10, 15, tzinfo=dt.UTC)),
        ("2026-11-25 10:15:00.123456Z", dt.datetime(2026, 11, 25, 10, 15, 0, 123456, tzinfo=dt.UTC)),
        ("2026-11-26T00:15:00+14:00", dt.datetime(2026, 11, 25, 10, 15, tzinfo=dt.UTC)),
        ("2026-11-25t10:15z", dt.datetime(2026, 11, 25, 10, 15, tzinfo=dt.UTC)),  # lowercase, no seconds
        ("2026-11-25T15:45:00+0530", dt.datetime(2026, 11, 25, 10, 15, tzinfo=dt.UTC)),
        ("2026-11-25T10:15:00-00:00", dt.datetime(2026, 11, 25, 10, 15, tzinfo=dt.UTC)),
        ("2026-11-25T10:15:00.123456789Z", dt.datetime(2026, 11, 25, 10, 15, 0, 123456, tzinfo=dt.UTC)),
        ("1000-01-01T00:00:00Z", dt.datetime(1000, 1, 1, tzinfo=dt.UTC)),
        ("9998-12-31T23:59:59.999999Z", dt.datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)),
        ("2024-02-29T00:00:00Z", dt.datetime(2024, 2, 29, tzinfo=dt.UTC)),
    ],
)
def test_datetimes_are_rfc_3339_and_normalized_to_utc(text, expected):
    record = validate_hit(hit(datetime=text), ENVS)
    assert record.datetime == expected
    assert record.datetime.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"page": ...}, "page is missing"),
        ({"page": ""}, "page must be a non-empty string"),
        ({"page": 7}, "page must be a non-empty string"),
        ({"page": "/" * (MAX_PAGE_LENGTH + 1)}, f"page is longer than {MAX_PAGE_LENGTH} characters"),
        ({"datetime": ...}, "datetime is missing"),
        ({"datetime": "2026-13-45T99:00:00Z"}, "has an impossible date"),
        ({"datetime": "2026-11-25"}, "has no time of day"),
        ({"datetime": 1764065700}, "is not a date and time string"),
        ({"datetime": "0001-01-01T00:00:00+01:00"}, "is outside the years 1000 to 9998"),
        ({"datetime": "9999-12-31T23:00:00"}, "is outside the years 1000 to 9998"),
        ({"page": "/a\x00b"}, "page contains a NUL character (U+0000), which the rollup database cannot store"),
        ({"user_id": ...}, "user_id is missing"),
        ({"user_id": True}, "user_id true is not an integer"),  # in JSON's words, as the record wrote it
        ({"user_id": [1]}, "user_id [1] is not an integer"),
        ({"datetime": None}, "datetime null is not a date and time string"),
        ({"user_id": 12.5}, "user_id 12.5 is not an integer"),
        ({"user_id": 12.0}, "user_id 12.0 is not an integer"),
        ({"user_id": "42"}, "user_id '42' is not an integer"),
        ({"user_id": -3}, "user_id -3 is outside 0..2147483647"),
        ({"user_id": 2**31}, "user_id 2147483648 is outside 0..2147483647"),
        ({"environment": ...}, "environment is missing"),
        ({"environment": "qa"}, "environment 'qa' is not one of development, production, staging"),
        ({"environment": "Production"}, "is not one of"),
        ({"environment": ["production"]}, "is not one of"),
    ],
)
def test_invalid_hits_say_why(overrides, expected):
    assert expected in reason(hit(**overrides))


# What the README's input section says is not a datetime, each with its reason.
NOT_DATETIMES = {
    "2026-W48-3T10:15:00Z": "is not a date and time of the form",  # ISO week date
    "2026-329T10:15:00Z": "is not a date and time of the form",  # ordinal date
    "20261125T101500Z": "is not a date and time of the form",  # basic format
    "2026-11-25T10Z": "is not a date and time of the form",  # no minutes
    "2026-11-25T10:15:00,5Z": "is not a date and time of the form",  # comma as the decimal separator
    "2026-11-25T10:15:00.1234567890Z": "is not a date and time of the form",  # more than 9 fraction digits
    "2026-11-25T10:15:00+05": "is not a date and time of the form",  # offset without minutes
    "2026-11-25T10:15:00+05:30:15": "is not a date and time of the form",  # offset with seconds
    "2026-11-25x10:15:00Z": "is not a date and time of the form",
    " 2026-11-25T10:15:00Z": "is not a date and time of the form",
    "２０２６-11-25T10:15:00Z": "is not a date and time of the form",  # fullwidth digits
    "2026-11-25T23:59:60Z": "has an impossible time of day",  # leap second
    "2026-11-25T24:00:00Z": "has an impossible time of day",
    "2026-02-29T10:15:00Z": "has an impossible date",
    "2026-11-25T10:15:00+24:00": "has an impossible UTC offset",
    "2026-11-25T10:15:00+01:60": "has an impossible UTC offset",
    "0001-01-01T00:00:00Z": "is outside the years 1000 to 9998",
    "9999-01-01T00:00:00Z": "is outside the years 1000 to 9998",
    "2026-11-25": "has no time of day",
}


@pytest.mark.parametrize(("text", "expected"), NOT_DATETIMES.items())
def test_what_is_not_a_datetime_says_why(text, expected):
    assert expected in reason(hit(datetime=text))


def test_every_problem_of_a_record_is_named():
    assert reason({"page": "", "user_id": None}) == (
        "page must be a non-empty string; datetime is missing; user_id null is not an integer; environment is missing"
    )


def test_limits_are_inclusive():
    record = validate_hit(hit(page="p" * MAX_PAGE_LENGTH, user_id=2**31 - 1), ENVS)
    assert len(record.page) == MAX_PAGE_LENGTH
    assert validate_hit(hit(user_id=0), ENVS).user_id == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42), ("0", 0), ("2147483647", 2**31 - 1), ("000000000000000000000000044574", 44574), ("-0", 0)],
)
def test_text_user_ids_that_are_integers(text, value):
    assert validate_text_hit(hit(user_id=text), ENVS).user_id == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.2", "user_id '4.2' is not an integer"),
        ("true", "user_id 'true' is not an integer"),
        ("", "user_id '' is not an integer"),
        ("1_000", "user_id '1_000' is not an integer"),
        ("٤٢", "is not an integer"),  # Arabic-Indic digits: int() would accept them
        ("-3", "user_id -3 is outside 0..2147483647"),
        ("+42", "user_id '+42' is not an integer"),
        (" 42", "user_id ' 42' is not an integer"),  # cells are taken as written: no space is trimmed
        ("42\x1d", "is not an integer"),
        ("9" * 5000, "is outside 0..2147483647"),  # int() of the text would raise
        ("-" + "9" * 30, "is outside 0..2147483647"),
    ],
)
def test_text_user_ids_that_are_not_valid(text, expected):
    assert expected in reason(hit(user_id=text), validate_text_hit)


def test_hit_record_is_immutable_and_slotted():
    record = validate_hit(hit(), ENVS)
    with pytest.raises(AttributeError):
        record.page = "/other"  # type: ignore[misc]
    assert not hasattr(record, "__dict__")


def test_hit_document_mapping_is_strict_with_lineage():
    mapping = Hit._doc_type.mapping.to_dict()
    assert mapping["dynamic"] == "strict"
    assert {name: field["type"] for name, field in mapping["properties"].items()} == {
        "page": "keyword",
        "datetime": "date",
        "user_key": "long",
        "user_id": "integer",
        "environment": "keyword",
        "source_file": "keyword",
        "load_id": "keyword",
    }


def test_user_key_is_only_read_from_doc_values():
    assert Hit._doc_type.mapping.to_dict()["properties"]["user_key"] == {"type": "long", "index": False}


@pytest.mark.parametrize("control", ["\x01", "\t", "\n", "\x1f", "\x7f", "\u2028"])
def test_control_characters_other_than_nul_are_accepted_in_a_page(control):
    assert validate_hit(hit(page=f"/a{control}b"), ENVS).page == f"/a{control}b"
