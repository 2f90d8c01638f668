"""The command line without a cluster: bad arguments, unreachable or refusing servers, credentials, output helpers.

Servers that refuse (401, 403, not Elasticsearch) and TLS are played by a tiny HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import io
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hitmetrics import cli


class FakeElasticsearch(http.server.BaseHTTPRequestHandler):
    """Answers every request with the class's status; remembers the Authorization header it was sent."""

    status = 200
    product = "Elasticsearch"
    seen_authorization: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        type(self).seen_authorization.append(self.headers.get("Authorization", ""))
        if self.status == 401:
            body = {"error": {"type": "security_exception", "reason": "unable to authenticate user [elastic]"}}
        elif self.status == 403:
            reason = "action [cluster:monitor/main] is unauthorized for user [reader]"
            body = {"error": {"root_cause": [{"type": "security_exception", "reason": reason}]}}
        elif self.path.startswith("/_cluster/health"):
            body = {"status": "green"}
        else:
            body = {"cluster_name": "fake", "version": {"number": "8.19.21"}}
        payload = json.dumps(body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.product:
            self.send_header("X-Elastic-Product", self.product)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


def _serve(status: int = 200, product: str | None = "Elasticsearch", tls: ssl.SSLContext | None = None):
    handler = type("Handler", (FakeElasticsearch,), {"status": status, "product": product, "seen_authorization": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls else "http"
    return server, handler, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def fake_es(request) -> Iterator[tuple[str, type[FakeElasticsearch]]]:
    server, handler, url = _serve(*getattr(request, "param", ()))
    yield url, handler
    server.shutdown()
    server.server_close()


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["count", "-e", "prod"], "hitmetrics count: unknown environment 'prod': configured are production, staging"),
        (["search", "--tz", "Mars/Olympus"], "hitmetrics search: unknown time zone 'Mars/Olympus'"),
        (["count", "--from", "2026-03-02", "--to", "2026-03-01"], "hitmetrics count: from (2026-03-02T00:00:00+00:00) "
         "must be before to (2026-03-01T00:00:00+00:00)"),
        (["count", "--tz", "Europe/Berlin", "--from", "2026-03-29T02:30"], "does not exist in Europe/Berlin"),
        (["histogram", "--interval", "1w"], "hitmetrics histogram: interval '1w': give a whole number and a unit"),
        (["save", "--page", "/a", "--datetime", "2026-11-25T10:00", "--user-id", "4.2", "-e", "production"],
         "hitmetrics save: invalid hit: user_id '4.2' is not an integer"),
        (["save", "--json", "[]"], "hitmetrics save: invalid hit: --json must be a JSON object"),
        (["save", "--json", "{}", "--page", "/a"], "hitmetrics save: give the hit either as --json or as"),
        (["list", "--prefix", "Bad Prefix"], "hitmetrics list: HITS_INDEX_PREFIX: 'Bad Prefix' is not a valid"),
        # The calendar's ends: one line, never an OverflowError's traceback.
        (["count", "--from", "0001-01-01T00:00+14:00"], "hitmetrics count: 0001-01-01T00:00+14:00 is outside the "
         "years 1000 to 9998, the only ones a hit may have"),
        (["count", "--from", "9999-12-31T23:59-14:00"], "hitmetrics count: 9999-12-31T23:59-14:00 is outside the "
         "years 1000 to 9998"),
        (["histogram", "--from", "9999-12-30", "--to", "9999-12-31T23:00"], "hitmetrics histogram: 9999-12-30 is "
         "outside the years 1000 to 9998"),
        (["save", "--json", '{"page": "/a\\u0000b", "datetime": "2026-11-25T10:00Z", "user_id": 1, '
                            '"environment": "production"}'], "hitmetrics save: invalid hit: page contains a NUL"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_before_connecting(capsys, monkeypatch, argv: list[str], message: str) -> None:
    monkeypatch.setenv("HITS_ENVIRONMENTS", "production,staging")
    monkeypatch.delenv("HITS_TIMEZONE", raising=False)
    # Nothing listens there: a bad argument must be reported before any connection is tried.
    status, out, err = _run(capsys, *argv, "--url", f"http://127.0.0.1:{_free_port()}")
    assert (status, out) == (2, "")
    assert message in _one_line(err)


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["count", "--url", "http://a:9200", "--conn-id", "x"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("verb", ["connect", "list", "count", "search", "histogram"])
def test_unreachable_cluster_is_one_line_and_exit_1(capsys, tmp_path: Path, verb: str) -> None:
    port = _free_port()
    output = ["-o", str(tmp_path / "out.csv")] if verb in ("search", "histogram") else []
    status, out, err = _run(capsys, verb, "--url", f"http://127.0.0.1:{port}", *output)
    assert (status, out) == (1, "")
    assert list(tmp_path.iterdir()) == []  # no output file, not even an empty or partial one
    assert _one_line(err) == f"hitmetrics {verb}: http://127.0.0.1:{port}: cannot reach Elasticsearch: " + (
        "[Errno 111] Connection refused"
    )


@pytest.mark.parametrize(
    ("fake_es", "message"),
    [
        ((401,), "authentication failed (HTTP 401): check the user and password or the API key"),
        ((403,), "permission denied (HTTP 403): action [cluster:monitor/main] is unauthorized for user [reader]"),
        ((200, None), "the server answered but is not Elasticsearch"),
    ],
    indirect=["fake_es"],
)
def test_refusals_are_one_line_and_exit_1(capsys, monkeypatch, fake_es, message: str) -> None:
    url, _ = fake_es
    monkeypatch.setenv("HITS_ES_PASSWORD", "s3cret-password")
    status, out, err = _run(capsys, "connect", "--url", url, "--user", "elastic")
    assert (status, out) == (1, "")
    assert _one_line(err) == f"hitmetrics connect: {url}: {message}"
    assert "s3cret" not in err


def test_basic_auth_and_api_key_come_from_the_environment(capsys, monkeypatch, fake_es) -> None:
    url, handler = fake_es
    monkeypatch.setenv("HITS_ES_PASSWORD", "s3cret-password")
    monkeypatch.setenv("HITS_ES_API_KEY", "a2V5LWlkOmtleQ==")
    assert _run(capsys, "connect", "--url", url, "--user", "elastic")[:2] == (
        0,
        f"{url}: cluster 'fake', Elasticsearch 8.19.21, health green\n",
    )
    assert handler.seen_authorization[-1] == "Basic " + base64.b64encode(b"elastic:s3cret-password").decode()
    assert _run(capsys, "connect", "--url", url, "--api-key")[0] == 0
    assert handler.seen_authorization[-1] == "ApiKey a2V5LWlkOmtleQ=="
    # Credentials in the URL work too, and are not shown.
    status, out, _ = _run(capsys, "connect", "--url", url.replace("//", "//elastic:other-secret@"))
    assert status == 0 and "other-secret" not in out
    assert handler.seen_authorization[-1] == "Basic " + base64.b64encode(b"elastic:other-secret").decode()


def test_missing_secret_without_a_terminal_is_a_clear_error(capsys, monkeypatch) -> None:
    monkeypatch.delenv("HITS_ES_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    status, _, err = _run(capsys, "connect", "--url", "http://127.0.0.1:9", "--user", "elastic")
    assert status == 1 and _one_line(err) == "hitmetrics connect: set HITS_ES_PASSWORD (there is no terminal to ask on)"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A CA certificate and a server certificate for 127.0.0.1 that it signed: (ca.pem, server.pem, server.key)."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)

    def certificate(subject: str, key, issuer: str, signer, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("test CA", ca_key, "test CA", ca_key, ca=True)
    server_cert = certificate("127.0.0.1", server_key, "test CA", ca_key, ca=False)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_https_with_a_ca_certificate(capsys, tls_files) -> None:
    ca, cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server, _, url = _serve(tls=context)
    try:
        status, out, _ = _run(capsys, "connect", "--url", url, "--ca-certs", str(ca))
        assert (status, out) == (0, f"{url}: cluster 'fake', Elasticsearch 8.19.21, health green\n")
        status, _, err = _run(capsys, "connect", "--url", url)  # the system CAs do not know the test CA
        assert status == 1 and "TLS failed: " in _one_line(err) and "certificate verify failed" in err
    finally:
        server.shutdown()
        server.server_close()
    status, _, err = _run(capsys, "connect", "--url", url, "--ca-certs", str(ca.parent / "missing.pem"))
    assert status == 1 and _one_line(err).endswith("missing.pem: no such file")


def test_format_table_and_human_size() -> None:
    table = cli.format_table(("name", "docs"), [("a", "1,200"), ("long-name", "3")], right=(1,))
    assert table.splitlines() == ["name        docs", "a          1,200", "long-name      3"]
    assert [cli.human_size(n) for n in (0, 1023, 1024, 5 * 1024**3 // 2)] == ["0 B", "1023 B", "1.0 KiB", "2.5 GiB"]


def test_progress_passes_items_through_and_reports_how_far() -> None:
    stream = io.StringIO()
    assert list(cli.with_progress(iter(range(3)), 4, "hits", stream, every_s=0)) == [0, 1, 2]
    assert stream.getvalue().splitlines() == [
        "exported 1 of 4 hits (25%)",
        "exported 2 of 4 hits (50%)",
        "exported 3 of 4 hits (75%)",
        "exported 3 hits",  # fewer than expected: the last line says what was exported
    ]
    quiet = io.StringIO()
    assert list(cli.with_progress(iter("ab"), None, "buckets", quiet, every_s=3600)) == ["a", "b"]
    assert quiet.getvalue() == "exported 2 buckets\n"


def test_hits_es_port_chooses_the_local_node_it_talks_to(capsys, monkeypatch, fake_es) -> None:
    url, _ = fake_es
    monkeypatch.delenv("HITS_ES_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_HITS_ELASTICSEARCH", raising=False)
    monkeypatch.setenv("HITS_ES_PORT", url.rsplit(":", 1)[1])
    status, out, _ = _run(capsys, "connect")
    assert status == 0 and out.startswith(f"{url}: cluster ")  # the node on HITS_ES_PORT, named
