"""The "Hit metrics" page of the Airflow UI: a FastAPI app served by the API server and a navigation entry.

The app is mounted at `/hitmetrics`; the navigation entry opens it inside the Airflow UI at `/plugin/hit-metrics`.
Every route, the page included, needs a logged-in Airflow user (Airflow's own JWT: the `_token` cookie the UI sets, or
an `Authorization: Bearer` header): without one the answer is 401, with a bad token or no right to the UI 403.
All figures come from the rollup tables through the `hits_rollups` connection, never from Elasticsearch.

Airflow loads each file of the plugins folder on its own, so this package keeps all its Python in this one file.
Every Airflow process loads the plugins, each task's too, so the app and what it imports are only built when the API
server asks for them. (No `from __future__ import annotations`: FastAPI must see the annotations of the routes,
which are defined inside `create_app`.)
"""

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import Engine

URL_PREFIX = "/hitmetrics"
ASSETS = Path(__file__).resolve().parent


def create_app() -> "FastAPI":
    """The page and its JSON data endpoints, all behind Airflow's authentication."""
    import datetime as dt
    from dataclasses import asdict
    from typing import Annotated

    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view
    from fastapi import Depends, FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse, Response
    from sqlalchemy import Engine

    from hitmetrics import dashboard
    from hitmetrics.config import ENVIRONMENT_NAME, load_settings
    from hitmetrics.model import OutOfRange, check_day
    from hitmetrics_airflow import rollups_url

    def rollups_engine() -> Engine:
        """The engine of the `hits_rollups` connection (or its fallbacks), one per database URL for the process."""
        return _engine(rollups_url(load_settings()))

    RollupsDep = Annotated[Engine, Depends(rollups_engine)]
    DayParam = Annotated[dt.date | None, Query(description="Local day (YYYY-MM-DD); default: the latest with rollups")]
    EnvironmentParam = Annotated[
        str | None, Query(pattern=f"^{ENVIRONMENT_NAME.pattern}$", description="One environment; default: all")
    ]
    # A page with NUL can have no rows (the loader refuses it), and PostgreSQL cannot even be asked for one.
    PageParam = Annotated[
        str | None, Query(min_length=1, pattern="^[^\x00]*$", description="One page; default: all pages")
    ]

    def known_environment(engine: Engine, environment: str | None) -> str | None:
        """`environment` if it is configured or has rollups; else 404, as a typo must not read as zero hits."""
        if environment is None:
            return None
        configured = load_settings().environments
        if environment not in configured and environment not in dashboard.environments(engine):
            raise HTTPException(404, f"environment {environment!r} is not one of HITS_ENVIRONMENTS "
                                     f"({', '.join(configured)}) and has no rollups")  # fmt: skip
        return environment

    def chosen_day(engine: Engine, day: dt.date | None) -> dt.date:
        if day is not None:
            try:
                return check_day(day)
            except OutOfRange as error:
                raise HTTPException(400, str(error)) from None
        days = dashboard.available_days(engine, limit=1)
        if not days:
            raise HTTPException(404, "No rollups yet: the hitmetrics DAG has not published any day")
        return days[0]

    app = FastAPI(
        title="Hit metrics",
        description="Hits and unique users per 30 minutes, top pages, loads and checks, from the rollup tables.",
        dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
    )
    page_html = (ASSETS / "page.html").read_text()
    icon_svg = (ASSETS / "icon.svg").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(page_html, headers={"Cache-Control": "no-store"})

    @app.get("/icon.svg", include_in_schema=False)
    def icon() -> Response:
        return Response(icon_svg, media_type="image/svg+xml")

    @app.get("/api/days")
    def days(engine: RollupsDep) -> dict:
        """Days with rollups (newest first), the environments and the reporting time zone."""
        return {
            "timezone": load_settings().timezone,
            "days": dashboard.available_days(engine),
            "environments": dashboard.environments(engine),
        }

    @app.get("/api/chart")
    def chart(
        engine: RollupsDep, day: DayParam = None, environment: EnvironmentParam = None, page: PageParam = None
    ) -> dict:
        """Hits and unique users per 30-minute bucket of the local day, with the comparison days aligned to it."""
        environment = known_environment(engine, environment)
        report = dashboard.day_chart(engine, chosen_day(engine, day), load_settings().tz, environment, page)
        return asdict(report)

    @app.get("/api/pages")
    def pages(engine: RollupsDep, day: DayParam = None, environment: EnvironmentParam = None) -> dict:
        """Every page of the day, most hits first, with its unique users, share of the day's hits, and the visits
        that entered and left on it."""
        environment = known_environment(engine, environment)
        chosen = chosen_day(engine, day)
        rows = dashboard.top_pages(engine, chosen, environment)
        return {"day": chosen, "environment": environment, "pages": [asdict(row) for row in rows]}

    @app.get("/api/status")
    def status(engine: RollupsDep, day: DayParam = None, environment: EnvironmentParam = None) -> dict:
        """The landing day's load runs, whether the day's checks passed, and the day's visits."""
        environment = known_environment(engine, environment)
        chosen = chosen_day(engine, day)
        report = dashboard.day_status(engine, chosen, environment)
        visits = dashboard.day_visits(engine, chosen, environment)
        return {**asdict(report), "checks_passed": report.checks_passed, "partial": report.partial,
                "visits": visits and asdict(visits)}  # fmt: skip

    @app.get("/api/rejects")
    def rejects(engine: RollupsDep, load_id: Annotated[str, Query(max_length=128)]) -> Response:
        """The rejects file of a load (JSON lines: file, line, reason, raw record), wherever it was written: a
        folder or object storage (through the `hits_storage` connection). Only a file that a load recorded."""
        from fastapi.responses import StreamingResponse

        from hitmetrics_airflow import storage_root

        location = dashboard.rejects_file(engine, load_id)
        if location is None:
            raise HTTPException(404, f"load {load_id!r} recorded no rejects file")
        path = storage_root(location)
        try:
            stream = path.open("rb")
        except FileNotFoundError:
            raise HTTPException(404, f"the rejects file {location} of load {load_id!r} is gone") from None
        headers = {"Content-Disposition": f'attachment; filename="{load_id}-rejects.jsonl"'}
        return StreamingResponse(_closing_chunks(stream), media_type="application/x-ndjson", headers=headers)

    return app


def _closing_chunks(stream, size: int = 1 << 16):
    with stream:
        while chunk := stream.read(size):
            yield chunk


@cache
def _engine(url: str) -> "Engine":
    from hitmetrics.rollup import engine_for

    return engine_for(url)


@cache
def _app() -> "FastAPI":
    return create_app()


class _AppsBuiltOnFirstUse:
    """`fastapi_apps` as Airflow reads it, building the app only when it is first read (by the API server)."""

    def __get__(self, instance: object, owner: type) -> list[dict]:
        return [{"app": _app(), "url_prefix": URL_PREFIX, "name": "Hit metrics"}]


class HitMetricsUIPlugin(AirflowPlugin):
    """Registers the app with the API server and its entry in the Airflow navigation."""

    name = "hitmetrics_ui"
    fastapi_apps = _AppsBuiltOnFirstUse()
    # Relative hrefs resolve against the UI's base URL, so the page also works behind a path prefix.
    external_views = [
        {
            "name": "Hit metrics",
            "href": "hitmetrics/",
            "icon": "hitmetrics/icon.svg",
            "url_route": "hit-metrics",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
