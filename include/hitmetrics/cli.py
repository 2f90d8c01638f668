"""`hitmetrics`: explore hits from the command line (connect, list, save, search, count, histogram).

Every verb takes the connection options; problems end with one line on stderr and a non-zero exit status:
2 for bad arguments or a bad hit, 1 when Elasticsearch cannot be reached or refuses.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import logging
import os
import sys
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import TextIO

import orjson
from elasticsearch import Elasticsearch

from hitmetrics import query as q
from hitmetrics.config import ConfigError, Settings, load_settings
from hitmetrics.connect import ConnectError, cluster_info, connect
from hitmetrics.model import InvalidHit

PASSWORD_VARIABLE = "HITS_ES_PASSWORD"
API_KEY_VARIABLE = "HITS_ES_API_KEY"
EXIT_UNAVAILABLE = 1
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; returns the exit status."""
    args = build_parser().parse_args(argv)
    # The client logs every request at INFO; a command's output is its answer, not a request log.
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    try:
        return args.run(args)
    except (q.QueryError, ConfigError) as error:
        return _fail(args, error, EXIT_BAD_INPUT)
    except InvalidHit as error:
        return _fail(args, f"invalid hit: {error}", EXIT_BAD_INPUT)
    except ConnectError as error:
        return _fail(args, error, EXIT_UNAVAILABLE)
    except BrokenPipeError:  # e.g. `hitmetrics search | head`: the reader has all it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def _fail(args: argparse.Namespace, error: Exception | str, status: int) -> int:
    print(f"hitmetrics {args.verb}: {error}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per verb, each with the connection options."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group(
        "connection (default: Airflow connection hits_elasticsearch, else HITS_ES_URL)"
    )
    source = group.add_mutually_exclusive_group()
    source.add_argument("--url", help="Elasticsearch URL, e.g. https://es.example.com:9200")
    source.add_argument("--conn-id", help="an Airflow connection id (env var AIRFLOW_CONN_<ID> or the metadata DB)")
    group.add_argument("--user", help=f"basic auth user; the password comes from ${PASSWORD_VARIABLE} or a prompt")
    group.add_argument(
        "--api-key", action="store_true", help=f"authenticate with the API key in ${API_KEY_VARIABLE} (or a prompt)"
    )
    group.add_argument("--ca-certs", metavar="FILE", help="CA certificate (PEM) that signed the cluster's certificate")
    group.add_argument("--prefix", help="index prefix (default: HITS_INDEX_PREFIX, else hits)")
    group.add_argument("--tz", help="time zone of --from/--to, buckets and output (default: HITS_TIMEZONE)")

    selection = argparse.ArgumentParser(add_help=False)
    where = selection.add_argument_group("which hits")
    where.add_argument("--page", help="exactly this page")
    where.add_argument("--user-id", type=int, help="exactly this user id")
    where.add_argument("-e", "--environment", help="one environment (default: all)")
    where.add_argument("--from", dest="start", metavar="WHEN", help="from this date or date-time, inclusive")
    where.add_argument("--to", dest="end", metavar="WHEN", help="up to this date or date-time, exclusive")

    parser = argparse.ArgumentParser(
        prog="hitmetrics",
        description="Explore page hits in hitmetrics' Elasticsearch indexes.",
        epilog="Dates and times are ISO 8601; without an offset they are wall-clock times in --tz.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, run, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, parents=[connection, *parents], help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    verb("connect", _connect, "check the connection: cluster name, version and health")
    verb("list", _list, "list the hit indexes and aliases with document counts, size and health")
    save = verb("save", _save, "validate one hit as the loader does and save it into its daily index")
    save.add_argument("--json", help='the hit as one JSON object, e.g. a landing file line: {"page": ..., ...}')
    save.add_argument("--page")
    save.add_argument("--datetime", help="ISO 8601; without an offset it means UTC, as in landing files")
    save.add_argument("--user-id")
    save.add_argument("-e", "--environment")
    search = verb("search", _search, "every matching hit, oldest first, as NDJSON or CSV", selection)
    _add_output_options(search, ("ndjson", "csv"))
    verb("count", _count, "how many hits match", selection)
    histogram = verb(
        "histogram", _histogram, "hits and unique users per time bucket, empty buckets included", selection
    )
    histogram.add_argument("--interval", default=q.DEFAULT_INTERVAL, help="fixed bucket width: 30m, 1h, 1d, ...")
    _add_output_options(histogram, ("table", "csv"))
    return parser


def _add_output_options(parser: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    parser.add_argument("--format", choices=formats, default=formats[0])
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="report progress on stderr (default: when stderr is a terminal and the output a file)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    if args.prefix:
        settings = dataclasses.replace(settings, index_prefix=args.prefix)
    if args.tz:
        q.parse_timezone(args.tz)  # a clear QueryError before Settings' own check
        settings = dataclasses.replace(settings, timezone=args.tz)
    return settings


def _client(args: argparse.Namespace) -> Elasticsearch:
    basic_auth = (args.user, _secret(PASSWORD_VARIABLE, f"password for {args.user}: ")) if args.user else None
    api_key = _secret(API_KEY_VARIABLE, "API key: ") if args.api_key else None
    return connect(args.url, conn_id=args.conn_id, basic_auth=basic_auth, api_key=api_key, ca_certs=args.ca_certs)


def _secret(variable: str, prompt: str) -> str:
    """A secret from the environment, else typed at the terminal: never from the command line, where ps shows it."""
    if os.environ.get(variable):
        return os.environ[variable]
    if not sys.stdin.isatty():
        raise ConnectError(f"set {variable} (there is no terminal to ask on)")
    return getpass.getpass(prompt)


def _query(args: argparse.Namespace, settings: Settings) -> q.HitQuery:
    """The hit query of the arguments, checked before anything is sent."""
    start = q.parse_instant(args.start, settings.tz) if args.start else None
    end = q.parse_instant(args.end, settings.tz) if args.end else None
    query = q.HitQuery(args.page, args.user_id, args.environment, start, end)
    q.target_index(settings, query.environment)  # an unknown environment is refused before any password prompt
    return query


@contextlib.contextmanager
def _output(path: str | None) -> Generator[TextIO]:
    """stdout, or a file that appears under its name only once complete (an export cut short leaves none)."""
    if path is None:
        yield sys.stdout
        return
    partial = f"{path}.partial"
    try:
        with open(partial, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def _connect(args: argparse.Namespace) -> int:
    info = cluster_info(_client(args))
    print(f"{info.url}: cluster {info.cluster_name!r}, Elasticsearch {info.version}, health {info.health}")
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rows = [
        (info.name, info.kind, info.health, f"{info.docs:,}", human_size(info.size_bytes))
        for info in q.list_indexes(_client(args), settings)
    ]
    if not rows:
        print(f"no hit indexes under prefix {settings.index_prefix!r} yet")
        return 0
    print(format_table(("name", "kind", "health", "docs", "size"), rows, right=(3, 4)))
    return 0


def _save(args: argparse.Namespace) -> int:
    settings = _settings(args)
    fields = {"page": args.page, "datetime": args.datetime, "user_id": args.user_id, "environment": args.environment}
    given = {k: v for k, v in fields.items() if v is not None}
    if args.json is not None:
        if given:
            raise q.QueryError("give the hit either as --json or as --page/--datetime/--user-id/--environment")
        result = q.save_hit(_client(args), settings, _json_object(args.json))
    else:
        result = q.save_hit(_client(args), settings, given, text=True)
    what = "created" if result.result == "created" else "updated (the same hit was saved before)"
    print(f"{what}: {result.index}/{result.id}")
    return 0


def _json_object(text: str) -> dict:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidHit(f"--json is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidHit("--json must be a JSON object")
    return value


def _search(args: argparse.Namespace) -> int:
    settings = _settings(args)
    query = _query(args, settings)
    es = _client(args)
    hits: Iterable = q.search_hits(es, settings, query)
    if _show_progress(args):
        hits = with_progress(hits, q.count_hits(es, settings, query), "hits", sys.stderr)
    write = q.write_ndjson if args.format == "ndjson" else q.write_hits_csv
    with _output(args.output) as out:
        write(hits, out, settings.tz)
    return 0


def _count(args: argparse.Namespace) -> int:
    settings = _settings(args)
    query = _query(args, settings)
    print(q.count_hits(_client(args), settings, query))
    return 0


def _histogram(args: argparse.Namespace) -> int:
    settings = _settings(args)
    query = _query(args, settings)
    buckets: Iterable = q.histogram(_client(args), settings, query, interval=args.interval)
    if _show_progress(args):
        bounded = query.start and query.end
        total = q.expected_buckets(query.start, query.end, q.parse_interval(args.interval)) if bounded else None
        buckets = with_progress(buckets, total, "buckets", sys.stderr)
    with _output(args.output) as out:
        if args.format == "csv":
            q.write_histogram_csv(buckets, out)
        else:
            rows = [(b.start.isoformat(), f"{b.hits:,}", f"{b.unique_users:,}") for b in buckets]
            out.write(format_table(q.HISTOGRAM_COLUMNS, rows, right=(1, 2)) + "\n")
    return 0


def _show_progress(args: argparse.Namespace) -> bool:
    return args.progress if args.progress is not None else (args.output is not None and sys.stderr.isatty())


def with_progress(items: Iterable, total: int | None, unit: str, stream: TextIO, every_s: float = 0.5) -> Iterator:
    """Pass `items` through, telling `stream` how far along they are at most every `every_s` seconds.

    `total` is what is expected (the data may change meanwhile); the last report gives what was exported. On a
    terminal the line is rewritten in place; elsewhere (a log file) each report is a line of its own.
    """
    interactive = stream.isatty()
    rewind, between = ("\r\x1b[K", "") if interactive else ("", "\n")  # \x1b[K: clear the old, longer line
    done = 0
    last = time.monotonic()
    for item in items:
        yield item
        done += 1
        if time.monotonic() - last >= every_s:
            share = f" of {total:,} {unit} ({min(done / total, 1):.0%})" if total else f" {unit}"
            stream.write(f"{rewind}exported {done:,}{share}{between}")
            stream.flush()
            last = time.monotonic()
    stream.write(f"{rewind}exported {done:,} {unit}\n")
    stream.flush()


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Plain aligned columns; the columns numbered in `right` (numbers) are right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = (
            str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in [header, *rows])


def human_size(size: int) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1, e.g. `4.2 MiB`."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


if __name__ == "__main__":
    sys.exit(main())
