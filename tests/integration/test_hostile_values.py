"""Hostile values through the whole chain, on SQLite and PostgreSQL: a page with NUL gets one verdict everywhere (a
reject at load, with its reason), and pages with other control characters are loaded, published and asked for."""

from __future__ import annotations

import datetime as dt

import orjson
from sqlalchemy import Engine, select

from hitmetrics import cli, dashboard, rollup
from hitmetrics.config import Settings
from hitmetrics.ingest import landing_root
from hitmetrics.model import NUL_IN_PAGE

from .conftest import run_nightly

DAY = dt.date(2026, 11, 25)
CONTROL_PAGES = ["/ctl\x01", "/tab\tpage", "/line\nbreak", "/del\x7f", "/unit\x1fsep"]


def test_nul_is_rejected_on_every_path_and_control_characters_are_published(
    es, tmp_path, index_prefix, engine: Engine, fastpath_built, capsys
) -> None:
    folder = tmp_path / "landing" / DAY.isoformat()
    folder.mkdir(parents=True)
    good = [{"page": page, "datetime": f"{DAY}T10:{n:02}:00Z", "user_id": n, "environment": "production"}
            for n, page in enumerate(CONTROL_PAGES * 3)]  # fmt: skip
    nul = {"page": "/nul\x00page", "datetime": f"{DAY}T11:00:00Z", "user_id": 1, "environment": "production"}
    (folder / "a.jsonl").write_bytes(b"".join(orjson.dumps(hit) + b"\n" for hit in [*good, nul]))
    # A raw NUL byte in a CSV cell, and one in a quoted cell (each parser's own way).
    (folder / "b.csv").write_bytes(b"page,datetime,user_id,environment\n/raw\x00nul,2026-11-25T12:00:00Z,2,production\n"
                                   b'"/quoted\x00nul",2026-11-25T12:01:00Z,3,production\n/fine,2026-11-25T12:02:00Z,4,'
                                   b"production\n")  # fmt: skip
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(data_dir=tmp_path / "data", landing=str(tmp_path / "landing"), index_prefix=index_prefix,
                        environments=("production",), max_reject_ratio=1, rollups_url=url)  # fmt: skip
    report = run_nightly(es, settings, DAY)

    assert (report["read"], report["loaded"], report["rejected"]) == (len(good) + 4, len(good) + 1, 3)
    reasons = [orjson.loads(line) for line in landing_root(report["rejects_file"]).read_bytes().splitlines()]
    assert all(NUL_IN_PAGE in reject["reason"] for reject in reasons), reasons
    with engine.connect() as conn:
        pages = dict(conn.execute(select(rollup.hits_by_page_daily.c.page, rollup.hits_by_page_daily.c.hits)).all())
    assert pages == {**{page: 3 for page in CONTROL_PAGES}, "/fine": 1}
    # The page's data, and the CLI, ask for them by name.
    chart = dashboard.day_chart(engine, DAY, settings.tz, "production", "/ctl\x01")
    assert chart.totals.hits == 3
    status = cli.main(["count", "--url", es.transport.node_pool.get().base_url, "--prefix", index_prefix,
                       "--page", "/del\x7f"])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0 and out.strip().startswith("3"), (out, err)
