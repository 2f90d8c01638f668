"""pandas frames of the rollup tables (SQLite and PostgreSQL), the searches and the histograms."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import Engine

from hitmetrics import frames
from hitmetrics import query as q
from hitmetrics.config import Settings

from .test_aggregate import Hit, make_index
from .test_bi_export import DAY, TZ, seed


def test_rollups_come_typed_on_the_local_clock(engine: Engine) -> None:
    seed(engine)
    settings = Settings(timezone=TZ)
    pages = frames.rollups("hits_by_page_30m", day=DAY, environments=["production"], pages=["/", "/buy"],
                           database=engine, settings=settings)  # fmt: skip
    assert str(pages.index.tz) == TZ and pages.index.name == "local_start"
    assert pages.index[0] == pd.Timestamp("2026-10-25 10:00", tz=TZ)  # 09:00 UTC after the clocks went back
    assert dict(pages.dtypes.astype(str)) == {"environment": "category", "page": "string", "hits": "Int64",
                                              "unique_users": "Int64"}  # fmt: skip
    assert pages["hits"].tolist() == [2, 1]

    daily = frames.rollups("hits_all_daily", start="2026-10-20", end=DAY, database=engine, settings=settings)
    assert daily.index.tolist() == [pd.Timestamp("2026-10-25", tz=TZ)] and daily["unique_users"].tolist() == [2]
    visits = frames.rollups("hits_visits_daily", day=DAY, database=engine, settings=settings)
    assert visits["bounce_rate"].dtype == "float64" and visits["visits"].tolist() == [2]
    assert frames.rollups("hits_by_env_daily", day="2026-10-26", database=engine, settings=settings).empty
    with pytest.raises(ValueError, match="not a rollup table"):
        frames.rollups("hits_loads", database=engine, settings=settings)


def test_searches_and_histograms_as_frames(es, index_prefix: str) -> None:
    settings = Settings(index_prefix=index_prefix, timezone="Europe/Berlin")
    noon = dt.datetime(2026, 11, 25, 11, 0, tzinfo=dt.UTC)
    make_index(es, index_prefix, dt.date(2026, 11, 25), "production",
               [Hit("/", noon, 1), Hit("/", noon + dt.timedelta(minutes=40), 2), Hit("/cart", noon, 1)])  # fmt: skip
    found = frames.hits(es, q.HitQuery(page="/"), settings)
    assert found.index.tolist() == [pd.Timestamp("2026-11-25 12:00", tz="Europe/Berlin"),
                                    pd.Timestamp("2026-11-25 12:40", tz="Europe/Berlin")]  # fmt: skip
    assert found["user_id"].tolist() == [1, 2] and found["user_id"].dtype == "Int64"
    start = dt.datetime(2026, 11, 25, 12, 0, tzinfo=settings.tz)
    buckets = frames.histogram(es, q.HitQuery(start=start, end=start + dt.timedelta(hours=1)), settings=settings)
    assert buckets["hits"].tolist() == [2, 1] and str(buckets.index.tz) == "Europe/Berlin"
