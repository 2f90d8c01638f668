"""Choosing and describing connections, without a cluster (refusals and TLS are tested in test_cli)."""

from __future__ import annotations

import pytest

from hitmetrics.connect import ConnectError, connect, describe_error, node_url, redact_url


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("https://elastic:pw@es.example.com:9243/base") == "https://elastic:***@es.example.com:9243/base"
    assert redact_url("http://127.0.0.1:9200") == "http://127.0.0.1:9200"


def test_default_is_hits_es_url(monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_HITS_ELASTICSEARCH", raising=False)
    monkeypatch.setenv("HITS_ES_URL", "http://es.internal:9201")
    assert node_url(connect()) == "http://es.internal:9201"
    assert node_url(connect("https://other:9243")) == "https://other:9243"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "http://a:9200", "conn_id": "x"}, "give a URL or an Airflow connection id, not both"),
        ({"conn_id": "x", "api_key": "k"}, "Airflow connection 'x' carries its own credentials"),
        ({"url": "http://a:9200", "ca_certs": "/no/such/ca.pem"}, "CA certificate /no/such/ca.pem: no such file"),
        ({"url": "http://elastic:pw@es.example.com"}, "cannot use http://elastic:***@es.example.com: URL must include"),
    ],
)
def test_connect_refuses_contradictions(kwargs: dict, message: str) -> None:
    with pytest.raises(ConnectError, match=message.replace("*", r"\*")):
        connect(**kwargs)


def test_describe_error_keeps_one_line() -> None:
    assert describe_error(RuntimeError("first line\nsecond line")) == "first line"
    assert describe_error(RuntimeError()) == "RuntimeError"
