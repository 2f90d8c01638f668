"""The "Hit metrics" plugin inside Airflow's API app: its data endpoints, its login requirement, its nav entry."""

from __future__ import annotations

import jwt
import pytest
from fastapi.testclient import TestClient
from seed_rollups import DST_DAY, TIMEZONE

PATHS = ["/hitmetrics/", "/hitmetrics/icon.svg", "/hitmetrics/api/days", "/hitmetrics/api/chart",
         "/hitmetrics/api/pages", "/hitmetrics/api/status"]  # fmt: skip


@pytest.fixture
def client(airflow_app, token_for, rollups_url) -> TestClient:
    """A logged-in browser: the `_token` cookie Airflow's login sets."""
    client = TestClient(airflow_app)
    client.cookies.set("_token", token_for("viewer"))
    return client


@pytest.fixture
def anonymous(airflow_app) -> TestClient:
    return TestClient(airflow_app)


@pytest.mark.parametrize("path", PATHS)
def test_without_a_login_everything_is_refused(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 401
    assert "Hit metrics" not in response.text


@pytest.mark.parametrize("path", PATHS)
def test_a_forged_token_is_refused(anonymous, path):
    forged = jwt.encode({"sub": "admin", "role": "admin"}, "not-the-airflow-secret", algorithm="HS512")
    assert anonymous.get(path, headers={"Authorization": f"Bearer {forged}"}).status_code == 403
    anonymous.cookies.set("_token", forged)
    assert anonymous.get(path).status_code == 403


def test_a_bearer_token_is_accepted(anonymous, token_for, rollups_url):
    response = anonymous.get("/hitmetrics/api/days", headers={"Authorization": f"Bearer {token_for('admin')}"})
    assert response.status_code == 200


def test_the_page_is_self_contained(client):
    page = client.get("/hitmetrics/")
    assert page.status_code == 200
    assert "<title>Hit metrics</title>" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: nothing leaves the server


def test_the_plugin_adds_a_navigation_entry(client):
    plugins = client.get("/api/v2/plugins").json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "hitmetrics_ui"]
    assert ours["fastapi_apps"][0]["url_prefix"] == "/hitmetrics"
    (view,) = ours["external_views"]
    assert view["href"] == "hitmetrics/" and view["url_route"] == "hit-metrics" and view["destination"] == "nav"


def test_days_newest_first_with_environments_and_time_zone(client):
    body = client.get("/hitmetrics/api/days").json()
    assert body["days"][0] == DST_DAY.isoformat()
    assert body["days"] == sorted(body["days"], reverse=True) and len(body["days"]) == 8
    assert body["environments"] == ["development", "production", "staging"]
    assert body["timezone"] == TIMEZONE


def test_chart_defaults_to_the_latest_day_and_all_environments(client):
    chart = client.get("/hitmetrics/api/chart").json()
    assert chart["day"] == DST_DAY.isoformat() and chart["environment"] is None and chart["page"] is None
    # Clocks go back at 03:00 CEST: 50 buckets, the local 02:00 and 02:30 twice with different offsets.
    assert len(chart["buckets"]) == 50
    labels = [(b["label"], b["utc_offset"]) for b in chart["buckets"]]
    assert labels[4:8] == [("02:00", "+02:00"), ("02:30", "+02:00"), ("02:00", "+01:00"), ("02:30", "+01:00")]
    assert chart["buckets"][0]["start"] == "2026-10-24T22:00:00Z"
    daily = {e: _daily_hits(client, e) for e in ["development", "production", "staging"]}
    assert sum(b["hits"] for b in chart["buckets"]) == chart["totals"]["hits"] == sum(daily.values())


def test_comparison_lines_follow_the_wall_clock(client):
    chart = client.get("/hitmetrics/api/chart", params={"day": DST_DAY.isoformat()}).json()
    previous, week = chart["comparisons"]
    assert (previous["day"], week["day"]) == ("2026-10-24", "2026-10-18")
    for comparison in (previous, week):
        # 48 normal half hours placed on the 50-bucket axis; the repeated hour has no counterpart.
        assert [p["index"] for p in comparison["points"]] == [i for i in range(50) if i not in (6, 7)]
    day_before = client.get("/hitmetrics/api/chart", params={"day": "2026-10-24"}).json()
    assert [p["hits"] for p in previous["points"]] == [b["hits"] for b in day_before["buckets"]]


def test_a_normal_day_has_48_buckets_and_a_missing_comparison_is_empty(client):
    chart = client.get("/hitmetrics/api/chart", params={"day": "2026-10-18"}).json()
    assert len(chart["buckets"]) == 48
    assert [c["points"] for c in chart["comparisons"]] == [[], []]  # no rollups before the 18th


def test_chart_of_one_page_in_one_environment(client):
    params = {"day": DST_DAY.isoformat(), "environment": "production", "page": "/checkout"}
    chart = client.get("/hitmetrics/api/chart", params=params).json()
    (row,) = [p for p in _pages(client, "production") if p["page"] == "/checkout"]
    assert chart["page"] == "/checkout" and chart["environment"] == "production"
    assert sum(b["hits"] for b in chart["buckets"]) == chart["totals"]["hits"] == row["hits"]
    assert chart["totals"]["unique_users"] == row["unique_users"]


def test_top_pages_sorted_with_shares(client):
    pages = _pages(client, None)
    assert len(pages) == 3000
    hits = [p["hits"] for p in pages]
    assert hits == sorted(hits, reverse=True)
    assert sum(p["share"] for p in pages) == pytest.approx(1.0)
    assert pages[0] == {**pages[0], "page": "/", "share": pytest.approx(pages[0]["hits"] / sum(hits))}


def test_status_shows_the_load_and_the_checks(client):
    status = client.get("/hitmetrics/api/status", params={"day": DST_DAY.isoformat()}).json()
    (run,) = status["loads"]
    assert run["read"] == run["loaded"] + run["rejected"] and run["rejects_file"].endswith("rejects.jsonl")
    assert [c["environment"] for c in status["checks"]] == ["development", "production", "staging"]
    assert status["checks_passed"] is True and status["partial"] is False  # loaded whole, not only intraday
    one = client.get("/hitmetrics/api/status", params={"environment": "staging"}).json()
    assert [c["environment"] for c in one["checks"]] == ["staging"]


def test_all_environments_count_a_user_once_and_pages_across_them_do_not_sum_users(client):
    chart = client.get("/hitmetrics/api/chart").json()
    daily = {e: client.get("/hitmetrics/api/chart", params={"environment": e}).json()["totals"]
             for e in ["development", "production", "staging"]}  # fmt: skip
    # From hits_all_daily: fewer than the sum, as some users are in two environments.
    assert chart["totals"]["unique_users"] < sum(t["unique_users"] for t in daily.values())
    in_every = next(p for p in _pages(client, None) if p["page"] == "/")
    assert in_every["unique_users"] is None  # "/" is in all three environments: no true count across them
    only_production = [p for p in _pages(client, None) if p["hits"] and p["page"].startswith("/deals/")]
    assert any(p["unique_users"] is not None for p in only_production)


def test_status_has_the_days_visits(client):
    everywhere = client.get("/hitmetrics/api/status").json()["visits"]
    one = client.get("/hitmetrics/api/status", params={"environment": "staging"}).json()["visits"]
    assert one["median_duration_seconds"] == 40.0 and everywhere["median_duration_seconds"] is None
    assert everywhere["visits"] > one["visits"] and 0 < everywhere["bounce_rate"] < 1
    page = _pages(client, "production")[0]
    assert page["entries"] > 0 and page["exits"] > 0


def test_an_environment_that_is_not_configured_is_a_404_not_zeros(client):
    for path in ["/hitmetrics/api/chart", "/hitmetrics/api/pages", "/hitmetrics/api/status"]:
        response = client.get(path, params={"environment": "prod"})
        assert response.status_code == 404
        assert "'prod' is not one of HITS_ENVIRONMENTS" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"day": "2026-13-01"}, "day"), ({"environment": "Prod;drop"}, "environment"), ({"page": ""}, "page")],
)
def test_bad_input_is_refused_with_the_reason(client, params, field):
    response = client.get("/hitmetrics/api/chart", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "0999-12-31"])
def test_a_day_at_the_calendars_ends_is_a_400_in_one_line(client, day):
    for path in ["/hitmetrics/api/chart", "/hitmetrics/api/pages", "/hitmetrics/api/status"]:
        response = client.get(path, params={"day": day})
        assert response.status_code == 400, path
        assert response.json()["detail"] == (
            f"day {day} is outside the years 1000 to 9998, the only ones a hit may have"
        )


def test_a_page_with_nul_is_refused_and_other_control_characters_are_asked_for(client):
    response = client.get("/hitmetrics/api/chart", params={"page": "x\x00y"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "page"]
    chart = client.get("/hitmetrics/api/chart", params={"page": "x\x01y\x7f"})
    assert chart.status_code == 200 and chart.json()["totals"]["hits"] == 0


def test_a_day_with_3000_pages_is_served_whole(client):
    # Its speed is measured in bench/, never timed here.
    for path in ["/hitmetrics/", "/hitmetrics/api/days", "/hitmetrics/api/chart", "/hitmetrics/api/status"]:
        assert client.get(path).status_code == 200
    assert len(client.get("/hitmetrics/api/pages").json()["pages"]) == 3000


def test_an_empty_database_says_so(airflow_app, token_for, tmp_path, monkeypatch):
    monkeypatch.setenv("HITS_ROLLUPS_URL", f"sqlite:///{tmp_path / 'empty.sqlite'}")
    from hitmetrics.rollup import create_tables, engine_for

    create_tables(engine_for(f"sqlite:///{tmp_path / 'empty.sqlite'}"))
    client = TestClient(airflow_app, headers={"Authorization": f"Bearer {token_for()}"})
    assert client.get("/hitmetrics/api/days").json()["days"] == []
    response = client.get("/hitmetrics/api/chart")
    assert response.status_code == 404 and "No rollups yet" in response.json()["detail"]


def test_the_hits_rollups_connection_wins_over_the_environment(airflow_app, token_for, postgresql_rollups, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HITS_ROLLUPS", postgresql_rollups)
    monkeypatch.setenv("HITS_ROLLUPS_URL", "sqlite:////nonexistent/never-used.sqlite")
    monkeypatch.setenv("HITS_TIMEZONE", TIMEZONE)
    client = TestClient(airflow_app, headers={"Authorization": f"Bearer {token_for()}"})
    assert client.get("/hitmetrics/api/days").json()["days"][0] == DST_DAY.isoformat()


def _pages(client: TestClient, environment: str | None) -> list[dict]:
    params = {"day": DST_DAY.isoformat(), **({"environment": environment} if environment else {})}
    return client.get("/hitmetrics/api/pages", params=params).json()["pages"]


def _daily_hits(client: TestClient, environment: str) -> int:
    chart = client.get("/hitmetrics/api/chart", params={"environment": environment}).json()
    return chart["totals"]["hits"]
