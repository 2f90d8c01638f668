"""Settings from environment variables, read when a task runs (never at DAG parse time)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The folder that holds include/ when running from a checkout; the embedded defaults live under it.
PROJECT_DIR = Path(__file__).resolve().parents[2]

ES_CONN_ID = "hits_elasticsearch"
ROLLUPS_CONN_ID = "hits_rollups"
# Credentials and endpoint of object-storage URLs in HITS_LANDING / HITS_REJECTS (unless a URL names its own).
STORAGE_CONN_ID = "hits_storage"
DEFAULT_ES_URL = "http://127.0.0.1:9200"

# Environment names become part of index names, so they are held to what an index name may contain. Always
# applied with fullmatch: `$` alone would let a trailing newline through.
ENVIRONMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
INDEX_PREFIX = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
REPLICAS = re.compile(r"\d{1,2}|\d{1,2}-(\d{1,2}|all)")
CLOCK_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
# A local time on the day after the landing day, or (24:00 to 47:59) on the day after that.
LATER_CLOCK_TIME = re.compile(r"([0-3]\d|4[0-7]):[0-5]\d")
MARKER = re.compile(r"[A-Za-z0-9_.-]{1,255}")


class ConfigError(ValueError):
    """A setting has a value hitmetrics cannot work with; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the embedded defaults."""

    data_dir: Path = PROJECT_DIR / ".data"
    landing: str = str(PROJECT_DIR / ".data" / "landing")
    environments: tuple[str, ...] = ("production", "staging", "development")
    timezone: str = "UTC"
    index_prefix: str = "hits"
    retention_days: int | None = None
    max_reject_ratio: float = 0.01
    es_url: str = DEFAULT_ES_URL  # HITS_ES_URL, else the local node on HITS_ES_PORT (`local_es_url`)
    rollups_url: str = field(default="")
    rejects: str = ""  # a folder or object-storage URL; empty: $HITS_DATA_DIR/rejects
    replicas: str = "0-1"  # per daily index: a count, or a range fitted to the nodes there are
    shard_mb: float = 1024  # a day's load is fanned out in shards of about this many MiB of files
    visit_gap_minutes: float = 30  # a user's hits further apart than this are two visits
    landing_marker: str = ""  # a file the shipper writes last into a day's folder (`_SUCCESS`); empty: none
    # Local time on the day after the landing day until which a scheduled run waits (24:00-47:59: the day after).
    landing_wait_until: str = "05:00"
    rollups_deadline: str = "06:00"  # local time, on the day after, by which a day's rollups are due; "off": none
    landing_poll_seconds: float = 60  # how often a waiting run looks for its landing folder

    def __post_init__(self) -> None:
        for env in self.environments:
            if not isinstance(env, str) or not ENVIRONMENT_NAME.fullmatch(env):
                raise ConfigError(
                    f"HITS_ENVIRONMENTS: {env!r} is not a valid environment name "
                    "(lowercase letters, digits and _, starting with a letter or digit, at most 64)"
                )
        if not self.environments:
            raise ConfigError("HITS_ENVIRONMENTS: at least one environment is needed")
        repeated = sorted({env for env in self.environments if self.environments.count(env) > 1})
        if repeated:
            raise ConfigError(f"HITS_ENVIRONMENTS: {', '.join(repeated)} named more than once")
        if not INDEX_PREFIX.fullmatch(self.index_prefix):
            raise ConfigError(f"HITS_INDEX_PREFIX: {self.index_prefix!r} is not a valid index name prefix")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ConfigError(f"HITS_TIMEZONE: {self.timezone!r} is not an IANA time zone name") from error
        if self.retention_days is not None and self.retention_days < 1:
            raise ConfigError("HITS_RETENTION_DAYS: must be a whole number of days, at least 1")
        if not 0 <= self.max_reject_ratio <= 1:
            raise ConfigError("HITS_MAX_REJECT_RATIO: must be between 0 and 1")
        if not REPLICAS.fullmatch(self.replicas):
            raise ConfigError(f"HITS_ES_REPLICAS: {self.replicas!r} is not a count (1) or a range (0-1, 1-all)")
        if not 0 < self.shard_mb < float("inf"):
            raise ConfigError("HITS_SHARD_MB: must be a number of MiB above 0, e.g. 512 or 0.5")
        if not 0 < self.visit_gap_minutes <= 24 * 60:
            raise ConfigError("HITS_VISIT_GAP_MINUTES: must be a number of minutes above 0, at most a day (1440)")
        if not LATER_CLOCK_TIME.fullmatch(self.landing_wait_until):
            raise ConfigError(
                f"HITS_LANDING_WAIT_UNTIL: {self.landing_wait_until!r} is not a local time (HH:MM, "
                "00:00 to 23:59 on the day after the landing day, 24:00 to 47:59 on the day after that)"
            )
        if not CLOCK_TIME.fullmatch(self.rollups_deadline) and self.rollups_deadline != "off":
            raise ConfigError(
                f"HITS_ROLLUPS_DEADLINE: {self.rollups_deadline!r} is not a local time of day (HH:MM, "
                "00:00 to 23:59) or off"
            )
        if not 0 < self.landing_poll_seconds <= 3600:
            raise ConfigError("HITS_LANDING_POLL_SECONDS: must be a number of seconds above 0, at most 3600")
        if self.landing_marker and (not MARKER.fullmatch(self.landing_marker) or set(self.landing_marker) == {"."}):
            raise ConfigError(f"HITS_LANDING_MARKER: {self.landing_marker!r} is not a file name (such as _SUCCESS)")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def es_hosts(self) -> list[str]:
        """The nodes of `HITS_ES_URL`: one URL, or a cluster's, comma-separated; the client uses them all."""
        return [url.strip() for url in self.es_url.split(",") if url.strip()]

    @property
    def rejects_location(self) -> str:
        """Where rejects files go (`HITS_REJECTS`): a folder, or an object-storage URL every worker reaches."""
        return self.rejects or str(self.data_dir / "rejects")

    @property
    def rollups_database_url(self) -> str:
        """SQLAlchemy URL of the rollup database when no `hits_rollups` connection is defined."""
        return self.rollups_url or f"sqlite:///{self.data_dir / 'rollups.sqlite'}"


def local_es_url(environ: Mapping[str, str] | None = None) -> str:
    """The local node's URL: on `HITS_ES_PORT` (default 9200), the one port setting every entry point honours
    (`make run`, `make airflow`, `make node-start`, `hitmetrics`) when `HITS_ES_URL` names no other cluster."""
    env = os.environ if environ is None else environ
    port = env.get("HITS_ES_PORT", "").strip()
    if not port:
        return DEFAULT_ES_URL
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"HITS_ES_PORT: {port!r} is not a TCP port (1 to 65535)")
    return f"http://127.0.0.1:{int(port)}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the `HITS_*` environment variables; unset ones keep their defaults."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("HITS_DATA_DIR") or PROJECT_DIR / ".data")

    def number(name: str, kind: type, default: object) -> object:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError as error:
            raise ConfigError(f"{name}: {raw!r} is not a {kind.__name__}") from error

    # Unset or empty means the default; a value that names nothing (" , ,") is a mistake, never the default.
    listed = env.get("HITS_ENVIRONMENTS", "")
    environments = tuple(e.strip() for e in listed.split(",") if e.strip()) if listed else Settings.environments
    if not environments:
        raise ConfigError(f"HITS_ENVIRONMENTS: {listed!r} names no environment (leave it unset for the default)")
    return Settings(
        data_dir=data_dir,
        landing=env.get("HITS_LANDING") or str(data_dir / "landing"),
        environments=environments,
        timezone=env.get("HITS_TIMEZONE") or "UTC",
        index_prefix=env.get("HITS_INDEX_PREFIX") or "hits",
        retention_days=number("HITS_RETENTION_DAYS", int, None),  # type: ignore[arg-type]
        max_reject_ratio=number("HITS_MAX_REJECT_RATIO", float, 0.01),  # type: ignore[arg-type]
        es_url=env.get("HITS_ES_URL") or local_es_url(env),
        rollups_url=env.get("HITS_ROLLUPS_URL", ""),
        rejects=env.get("HITS_REJECTS", ""),
        replicas=env.get("HITS_ES_REPLICAS", "").strip() or Settings.replicas,
        shard_mb=number("HITS_SHARD_MB", float, Settings.shard_mb),  # type: ignore[arg-type]
        visit_gap_minutes=number("HITS_VISIT_GAP_MINUTES", float, Settings.visit_gap_minutes),  # type: ignore[arg-type]
        landing_marker=env.get("HITS_LANDING_MARKER", "").strip(),
        landing_wait_until=env.get("HITS_LANDING_WAIT_UNTIL", "").strip() or Settings.landing_wait_until,
        rollups_deadline=env.get("HITS_ROLLUPS_DEADLINE", "").strip() or Settings.rollups_deadline,
        landing_poll_seconds=number("HITS_LANDING_POLL_SECONDS", float, Settings.landing_poll_seconds),  # type: ignore[arg-type]
    )
