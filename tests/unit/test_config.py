import pytest

from hitmetrics.config import ConfigError, Settings, load_settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HITS_INDEX_PREFIX": "f2\n"}, "HITS_INDEX_PREFIX: 'f2\\n' is not a valid index name prefix"),
        ({"HITS_INDEX_PREFIX": "Hits"}, "HITS_INDEX_PREFIX: 'Hits' is not a valid"),
        ({"HITS_ENVIRONMENTS": " , ,"}, "HITS_ENVIRONMENTS: ' , ,' names no environment"),
        ({"HITS_ENVIRONMENTS": "prod\n"}, None),  # the name is stripped like its neighbours' spaces
        ({"HITS_ENVIRONMENTS": "prod,qa,prod"}, "HITS_ENVIRONMENTS: prod named more than once"),
        ({"HITS_ENVIRONMENTS": "prod,q a"}, "HITS_ENVIRONMENTS: 'q a' is not a valid environment name"),
        ({"HITS_TIMEZONE": "UTC\n"}, "HITS_TIMEZONE: 'UTC\\n' is not an IANA time zone name"),
        ({"HITS_RETENTION_DAYS": "0"}, "HITS_RETENTION_DAYS: must be a whole number of days, at least 1"),
        ({"HITS_MAX_REJECT_RATIO": "2"}, "HITS_MAX_REJECT_RATIO: must be between 0 and 1"),
        ({"HITS_LANDING_WAIT_UNTIL": "5:00"}, "HITS_LANDING_WAIT_UNTIL: '5:00' is not a local time"),
        ({"HITS_LANDING_WAIT_UNTIL": "48:00"}, "HITS_LANDING_WAIT_UNTIL: '48:00' is not a local time"),
        ({"HITS_ROLLUPS_DEADLINE": "24:00"}, "HITS_ROLLUPS_DEADLINE: '24:00' is not a local time of day"),
        ({"HITS_LANDING_MARKER": "../_SUCCESS"}, "HITS_LANDING_MARKER: '../_SUCCESS' is not a file name"),
        ({"HITS_LANDING_POLL_SECONDS": "0"}, "HITS_LANDING_POLL_SECONDS: must be a number of seconds above 0"),
    ],
)
def test_a_setting_that_slips_is_refused_naming_the_variable(environ, message):
    if message is None:
        assert load_settings(environ).environments == ("prod",)
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    assert str(caught.value).startswith(message)


def test_unset_or_empty_settings_are_the_defaults():
    assert (
        load_settings({})
        == load_settings({"HITS_ENVIRONMENTS": "", "HITS_INDEX_PREFIX": ""})
        == Settings(data_dir=Settings.data_dir)
    )


def test_a_newline_never_reaches_an_environment_name():
    with pytest.raises(ConfigError, match="not a valid environment name"):
        Settings(environments=("production\n",))


@pytest.mark.parametrize(
    ("environ", "replicas", "shard_mb"),
    [({}, "0-1", 1024), ({"HITS_ES_REPLICAS": "1", "HITS_SHARD_MB": "0.5"}, "1", 0.5),
     ({"HITS_ES_REPLICAS": " 1-all "}, "1-all", 1024)],
)  # fmt: skip
def test_replicas_and_shard_size(environ, replicas, shard_mb):
    settings = load_settings(environ)
    assert (settings.replicas, settings.shard_mb) == (replicas, shard_mb)


@pytest.mark.parametrize(
    ("environ", "message"),
    [({"HITS_ES_REPLICAS": "one"}, "HITS_ES_REPLICAS: 'one' is not a count"),
     ({"HITS_ES_REPLICAS": "1-"}, "HITS_ES_REPLICAS"), ({"HITS_SHARD_MB": "0"}, "HITS_SHARD_MB: must be"),
     ({"HITS_SHARD_MB": "nan"}, "HITS_SHARD_MB: must be"), ({"HITS_SHARD_MB": "inf"}, "HITS_SHARD_MB: must be"),
     ({"HITS_SHARD_MB": "1GB"}, "HITS_SHARD_MB: '1GB' is not a float")],
)  # fmt: skip
def test_wrong_replicas_or_shard_sizes_are_refused(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ)


def test_a_cluster_is_its_nodes_comma_separated():
    settings = load_settings({"HITS_ES_URL": "http://a:9200, http://b:9200,"})
    assert settings.es_hosts == ["http://a:9200", "http://b:9200"]


def test_the_landing_wait_may_run_into_the_second_day_and_the_deadline_may_be_off():
    settings = load_settings({"HITS_LANDING_WAIT_UNTIL": "47:59", "HITS_ROLLUPS_DEADLINE": "off"})
    assert (settings.landing_wait_until, settings.rollups_deadline) == ("47:59", "off")


def test_the_local_node_port_is_one_setting_for_every_entry_point() -> None:
    assert load_settings({}).es_url == "http://127.0.0.1:9200"
    assert load_settings({"HITS_ES_PORT": "9250"}).es_url == "http://127.0.0.1:9250"
    assert load_settings({"HITS_ES_PORT": "9250", "HITS_ES_URL": "http://es:9200"}).es_url == "http://es:9200"
    with pytest.raises(ConfigError, match="HITS_ES_PORT: 'nine' is not a TCP port"):
        load_settings({"HITS_ES_PORT": "nine"})
