"""Elasticsearch clients for exploring hits: from a URL with credentials or from an Airflow connection id.

Failures become `ConnectError` with a one-line message (never a credential), so the command line can print it
instead of a stack trace.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Generator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import elastic_transport
import elasticsearch
from elasticsearch import Elasticsearch

from hitmetrics.config import ES_CONN_ID, load_settings

# Everything the client raises when a request fails: HTTP errors (ApiError) and transport failures.
CLIENT_ERRORS = (elasticsearch.ApiError, elastic_transport.TransportError)


class ConnectError(Exception):
    """Elasticsearch cannot be reached or refuses us; the message is one line, fit for a user."""


@dataclass(frozen=True)
class ClusterInfo:
    """What `cluster_info` learned about the cluster a client reaches."""

    url: str
    cluster_name: str
    version: str
    health: str


def connect(
    url: str | None = None,
    *,
    conn_id: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    api_key: str | None = None,
    ca_certs: str | None = None,
    request_timeout: float = 30.0,
) -> Elasticsearch:
    """A client for `url` or Airflow connection `conn_id`; with neither, the pipeline's own choice.

    That choice is the `hits_elasticsearch` connection when it is defined as `AIRFLOW_CONN_HITS_ELASTICSEARCH`,
    else `HITS_ES_URL` (only the environment variable is looked at, so a plain run needs no Airflow database).
    Credentials may also be in the URL as `user:password@`. Nothing is sent yet: `cluster_info` checks the client.
    """
    if url and conn_id:
        raise ConnectError("give a URL or an Airflow connection id, not both")
    if conn_id and (basic_auth or api_key or ca_certs):
        raise ConnectError(f"Airflow connection {conn_id!r} carries its own credentials and certificates")
    if not url and not conn_id and os.environ.get(f"AIRFLOW_CONN_{ES_CONN_ID.upper()}"):
        conn_id = ES_CONN_ID
    if conn_id:
        return _client_from_airflow(conn_id)
    url = url or load_settings().es_url
    hosts = [node.strip() for node in url.split(",") if node.strip()]  # a cluster's nodes, comma-separated
    options: dict = {"request_timeout": request_timeout, "max_retries": 1}
    if basic_auth:
        options["basic_auth"] = basic_auth
    if api_key:
        options["api_key"] = api_key
    if ca_certs:
        if not os.path.isfile(ca_certs):
            raise ConnectError(f"CA certificate {ca_certs}: no such file")
        options["ca_certs"] = ca_certs
    try:
        return Elasticsearch(hosts, **options)
    except (ValueError, TypeError) as error:
        raise ConnectError(f"cannot use {', '.join(map(redact_url, hosts))}: {error}") from None


def _client_from_airflow(conn_id: str) -> Elasticsearch:
    """The client the Elasticsearch provider builds for `conn_id`, so extras behave exactly as in the DAGs.

    Airflow is imported here, lazily, so the package stays importable without it. Its log output goes to
    stderr: stdout may be carrying NDJSON or CSV.
    """
    try:
        with contextlib.redirect_stdout(sys.stderr):
            from airflow.providers.elasticsearch.hooks.elasticsearch import ElasticsearchSQLHook

            return ElasticsearchSQLHook(elasticsearch_conn_id=conn_id).get_conn().es
    except ImportError:
        raise ConnectError("Airflow connections need apache-airflow-providers-elasticsearch installed") from None
    except Exception as error:  # Airflow raises its own types (AirflowNotFoundException, config errors, ...)
        raise ConnectError(f"Airflow connection {conn_id!r}: {describe_error(error)}") from None


def cluster_info(es: Elasticsearch) -> ClusterInfo:
    """Check that `es` reaches a cluster and is let in; `ConnectError` with one line if not."""
    with friendly_errors(es):
        info = es.info()
        health = es.cluster.health()["status"]
    return ClusterInfo(
        url=node_url(es), cluster_name=info["cluster_name"], version=info["version"]["number"], health=health
    )


@contextlib.contextmanager
def friendly_errors(es: Elasticsearch) -> Generator[None]:
    """Turn client errors raised inside the block into `ConnectError` naming the node and what went wrong."""
    try:
        yield
    except CLIENT_ERRORS as error:
        raise ConnectError(f"{node_url(es)}: {describe_error(error)}") from None


def describe_error(error: BaseException) -> str:
    """One line saying what went wrong talking to Elasticsearch, without stack trace or secrets."""
    if isinstance(error, elasticsearch.AuthenticationException):
        return "authentication failed (HTTP 401): check the user and password or the API key"
    if isinstance(error, elasticsearch.AuthorizationException):
        return f"permission denied (HTTP 403): {_reason(error)}"
    if isinstance(error, elasticsearch.UnsupportedProductError):
        return "the server answered but is not Elasticsearch"
    if isinstance(error, elastic_transport.TlsError):
        return f"TLS failed: {_root_message(error)} (check the CA certificate)"
    if isinstance(error, elastic_transport.ConnectionTimeout):
        return "timed out waiting for Elasticsearch"
    if isinstance(error, elastic_transport.ConnectionError):
        return f"cannot reach Elasticsearch: {_root_message(error)}"
    if isinstance(error, elasticsearch.ApiError):
        return f"Elasticsearch refused the request (HTTP {error.meta.status}): {_reason(error)}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def redact_url(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def node_url(es: Elasticsearch) -> str:
    """The URL of the client's (first) node; credentials live in headers, never in it."""
    node = es.transport.node_pool.all()[0].config
    return f"{node.scheme}://{node.host}:{node.port}{node.path_prefix}"


def _reason(error: elasticsearch.ApiError) -> str:
    """The innermost `reason` of an Elasticsearch error body: the part that says what to fix."""
    detail = error.body.get("error") if isinstance(error.body, dict) else None
    if isinstance(detail, dict):
        causes = detail.get("root_cause") or [detail]
        detail = causes[0].get("reason") or causes[0].get("type")
    return str(detail or error.message)


def _root_message(error: BaseException) -> str:
    """The lowest-level cause of a transport error, e.g. `[Errno 111] Connection refused`."""
    while getattr(error, "errors", None):
        error = error.errors[0]
    text = str(error)
    # urllib3 says "HTTPConnection(host=..., port=...): Failed to establish a new connection: [Errno 111] ...".
    return text.rsplit(": ", 1)[-1] if "[Errno" in text else text
