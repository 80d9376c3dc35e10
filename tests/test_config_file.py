"""The configuration of `linkhub run`: flag > environment > file > default.

`resolve` is pure, so most of this is tables of sources in and settings out,
without files or a real environment; a few tests at the end go through `load`,
`linkhub config check` and `linkhub run`'s parser with real files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hub.config import loader as config_file
from hub.config.loader import KEYS, Resolution, resolve
from hub.config.model import ExternalBroker, HostPort, HubConfig, link_page_url
from hub.core.rate_limits import parse_rate
from hub.errors import ConfigError
from linkhub import cli
from linkhub.cli import main as linkhub_main
from linkhub.cli import password_on_command_line

DATA = Path("/srv/linkhub")
FILE = Path("/etc/linkhub/linkhub.toml")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def resolved(
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    file: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Resolution:
    kwargs.setdefault("file_path", FILE if file else None)
    return resolve(flags or {}, env or {}, file or {}, data_dir=DATA, **kwargs)


def only_problem(resolution: Resolution) -> str:
    assert len(resolution.problems) == 1, resolution.problems
    assert resolution.config is None
    return resolution.problems[0]


# --- precedence ----------------------------------------------------------------------------------


def test_defaults_alone_make_the_embedded_hub() -> None:
    resolution = resolved()
    assert resolution.problems == ()
    assert resolution.config == HubConfig(data_dir=DATA, database_url=f"sqlite:///{DATA / 'linkhub.db'}")
    assert {s.source for s in resolution.settings} == {"default"}


@pytest.mark.parametrize(
    ("flags", "env", "file", "port", "source"),
    [
        ({}, {}, {}, 8080, "default"),
        ({}, {}, {"http_port": 8001}, 8001, f"file {FILE}"),
        ({}, {"LINKHUB_HTTP_PORT": "8002"}, {"http_port": 8001}, 8002, "env LINKHUB_HTTP_PORT"),
        ({"http_port": "8003"}, {"LINKHUB_HTTP_PORT": "8002"}, {"http_port": 8001}, 8003, "flag --http-port"),
        ({"http_port": "8003"}, {}, {"http_port": 8001}, 8003, "flag --http-port"),
        # An empty variable is unset (compose files and unit files often pass one).
        ({}, {"LINKHUB_HTTP_PORT": ""}, {"http_port": 8001}, 8001, f"file {FILE}"),
    ],
)
def test_flag_beats_environment_beats_file_beats_default(
    flags: dict[str, Any], env: dict[str, str], file: dict[str, Any], port: int, source: str
) -> None:
    resolution = resolved(flags, env, file)
    assert resolution.hub_config().http_port == port
    assert resolution.setting("http_port").source == source


def test_each_key_is_merged_on_its_own() -> None:
    resolution = resolved(
        {"mqtt_port": "1999"},
        {"LINKHUB_HTTP_HOST": "127.0.0.1", "LINKHUB_MQTT_PORT": "1888"},
        {"http_host": "0.0.0.0", "http_port": 8081, "code_lifetime_s": 600},
    )
    config = resolution.hub_config()
    assert (config.http_host, config.http_port, config.mqtt_port, config.code_lifetime_s) == (
        "127.0.0.1",
        8081,
        1999,
        600,
    )
    assert config.poll_interval_s == 5


def test_every_key_comes_from_each_source() -> None:
    """The file, the environment and the flags can each set every key."""
    values: dict[str, tuple[Any, str, Any]] = {  # key: (in the file, as text, expected in the Resolution)
        "http_host": ("127.0.0.2", "127.0.0.2", "127.0.0.2"),
        "http_port": (81, "81", 81),
        "mqtt_host": ("127.0.0.3", "127.0.0.3", "127.0.0.3"),
        "mqtt_port": (1885, "1885", 1885),
        # 0 (no TLS): a TLS port goes with the hub's own mosquitto, not with `broker`
        # below; tests/test_tls.py sets a real one from each source.
        "mqtt_tls_port": (0, "0", 0),
        "broker": (
            "mqtt://a:b@127.0.0.1:1",
            "mqtt://a:b@127.0.0.1:1",
            ExternalBroker("127.0.0.1", 1, "a", "b"),
        ),
        "public_host": ("hub.lan", "hub.lan", "hub.lan"),
        "device_broker": ("hub.lan:1999", "hub.lan:1999", HostPort("hub.lan", 1999)),
        "code_lifetime_s": (120, "120", 120),
        "poll_interval_s": (2, "2", 2),
        "unconfirmed_device_lifetime_s": (3600, "3600", 3600),
        "mdns": (False, "off", False),
        "waiting_list": (False, "no", False),
        "home_assistant": (True, "yes", True),
        # The bridge goes with the hub's own mosquitto, not with `broker` above: it is
        # tested from each source in tests/test_home_assistant.py.
        "mdns_name": ("Kitchen.local", "Kitchen.local", "kitchen"),
        "mdns_interfaces": (["wlan0", "eth0"], "wlan0, eth0", ("wlan0", "eth0")),
        "account_service": ("http://127.0.0.1:8081", "http://127.0.0.1:8081", "http://127.0.0.1:8081"),
        "account_service_token_file": ("/run/token", "/run/token", Path("/run/token")),
        "database_url": ("postgresql+psycopg://u@127.0.0.1/db",) * 3,
        "log_format": ("json", "JSON", "json"),
        "link_requests_per_client": ("2 per minute", "2 per minute", parse_rate("2 per minute")),
        "link_requests_total": ("1000/hour", "1000/hour", parse_rate("1000/hour")),
        "max_pending_requests": (7, "7", 7),
        "device_settings_sets": ("5 per minute", "5 per minute", parse_rate("5 per minute")),
        "device_reports": ("6 per minute", "6 per minute", parse_rate("6 per minute")),
        "device_settings_gets": ("7 per hour", "7 per hour", parse_rate("7 per hour")),
        "device_status": ("8/minute", "8/minute", parse_rate("8/minute")),
        "device_descriptions": ("9/minute", "9/minute", parse_rate("9/minute")),
        "device_states": ("10/minute", "10/minute", parse_rate("10/minute")),
        "min_free_space_mb": (128, "128", 128),
        "history_days": (30, "30", 30),
        "history_per_account": (200, "200", 200),
        "delivered_outbox_days": (2, "2", 2),
        "ended_link_requests_days": (7, "7", 7),
        "web_session_lifetime_s": (3600, "3600", 3600),
        "web_hosts": (["hub.home.arpa"], "hub.home.arpa", ("hub.home.arpa",)),
        "probe_token_file": ("/run/probe", "/run/probe", Path("/run/probe")),
        "https_port": (8443, "8443", 8443),
        "oauth_port": (9443, "9443", 9443),
        "oauth_issuer": ("https://hub.lan/oauth",) * 3,
        "oauth_unregistered_apps": (False, "no", False),
        "broker_restart_limit": (3, "3", 3),
        "broker_restart_window_s": (30, "30", 30),
    }
    assert set(values) == {key.name for key in KEYS} - {"home_assistant_broker"}
    flag_values = {name: text for name, (_, text, _) in values.items()}
    flag_values["mdns"], flag_values["mdns_interfaces"] = False, ["wlan0", "eth0"]
    flag_values["waiting_list"] = False
    flag_values["home_assistant"] = True
    flag_values["oauth_unregistered_apps"] = False
    flag_values["web_hosts"] = ["hub.home.arpa"]
    sources = {
        "file": resolved(file={name: v[0] for name, v in values.items()}, read_secret=lambda _p: "t"),
        "env": resolved(
            env={key.env: values[key.name][1] for key in KEYS if key.name in values},
            read_secret=lambda _p: "t",
        ),
        "flag": resolved(flags=flag_values, read_secret=lambda _p: "t"),
    }
    for source, resolution in sources.items():
        assert resolution.problems == (), (source, resolution.problems)
        for name, (_, _, expected) in values.items():
            setting = resolution.setting(name)
            assert (setting.value, setting.source.split()[0]) == (expected, source), name
    config = sources["env"].hub_config()
    assert config.external_broker == ExternalBroker("127.0.0.1", 1, "a", "b")
    assert (config.account_service_url, config.account_service_token) == ("http://127.0.0.1:8081", "t")
    assert (config.mdns, config.mdns_name, config.mdns_interfaces) == (False, "kitchen", ("wlan0", "eth0"))
    assert config.log_format == "json"
    assert config.web_session_lifetime_s == 3600
    assert config.probe_token == "t"
    assert config.https_port == 8443
    assert (config.oauth_port, config.oauth_issuer, config.oauth_unregistered_apps) == (
        9443,
        "https://hub.lan/oauth",
        False,
    )
    assert "hub.home.arpa" in config.web_host_names and "kitchen.local" in config.web_host_names
    assert (config.broker_restart_limit, config.broker_restart_window_s) == (3, 30)
    assert (
        config.limits.link_requests_per_client,
        config.limits.link_requests_total,
        config.limits.max_pending_requests,
    ) == (parse_rate("2 per minute"), parse_rate("1000/hour"), 7)


def test_a_list_from_a_flag_replaces_the_file_s_list() -> None:
    resolution = resolved({"mdns_interfaces": ["eth1"]}, {}, {"mdns_interfaces": ["wlan0", "eth0"]})
    assert resolution.hub_config().mdns_interfaces == ("eth1",)


def test_no_mdns_is_named_as_typed() -> None:
    resolution = resolved({"mdns": False}, {"LINKHUB_MDNS": "yes"})
    assert resolution.hub_config().mdns is False
    assert resolution.setting("mdns").source == "flag --no-mdns"


# --- problems in plain words: key, source, what was expected ----------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "file", "message"),
    [
        (
            {},
            {"LINKHUB_HTTP_PORT": "eighty"},
            {},
            "environment variable LINKHUB_HTTP_PORT: expected a whole number from 0 to 65535, got 'eighty'",
        ),
        (
            {},
            {},
            {"http_port": "8080"},
            f"{FILE}, key http_port: expected a whole number (without quotes), got the text '8080'",
        ),
        (
            {},
            {},
            {"mqtt_port": 70000},
            f"{FILE}, key mqtt_port: expected a whole number from 0 to 65535, got 70000",
        ),
        (
            {},
            {},
            {"http_port": True},
            f"{FILE}, key http_port: expected a whole number from 0 to 65535, got true",
        ),
        (
            {"poll_interval_s": "0"},
            {},
            {},
            "flag --poll-interval: expected a whole number from 1 to 60 seconds, got 0",
        ),
        (
            {"code_lifetime_s": "ten"},
            {},
            {},
            "flag --code-lifetime: expected a whole number from 10 to 86400 seconds, got 'ten'",
        ),
        ({}, {}, {"http_host": 8080}, f"{FILE}, key http_host: expected some text, got 8080"),
        (
            {},
            {},
            {"mdns": "no"},
            f"{FILE}, key mdns: expected true or false (without quotes), got the text 'no'",
        ),
        (
            {},
            {"LINKHUB_MDNS": "maybe"},
            {},
            "environment variable LINKHUB_MDNS: expected true or false, got 'maybe'",
        ),
        (
            {},
            {},
            {"mdns_interfaces": "wlan0"},
            f"{FILE}, key mdns_interfaces: expected a list such as "
            '["wlan0", "192.168.1.20"], got the text \'wlan0\'',
        ),
        (
            {},
            {},
            {"mdns_name": "my hub"},
            f"{FILE}, key mdns_name: expected one host name such as linkhub or kitchen-hub.local "
            "(letters, digits and '-', at most 63), got 'my hub'",
        ),
        ({}, {}, {"log_format": "xml"}, f"{FILE}, key log_format: expected text or json, got 'xml'"),
        (
            {},
            {"LINKHUB_DEVICE_BROKER": "hub.lan:0"},
            {},
            "environment variable LINKHUB_DEVICE_BROKER: expected HOST or HOST:PORT (port 1-65535), "
            "got 'hub.lan:0'",
        ),
        (
            {},
            {},
            {"account_service": "ftp://x"},
            f"{FILE}, key account_service: expected http://HOST:PORT (no user or password in it), got 'ftp://x'",
        ),
        ({}, {}, {"http_prot": 8080}, f"{FILE}, key http_prot: unknown key (did you mean http_port?); "),
        ({}, {}, {"data_dir": "/x"}, f"{FILE}, key data_dir: cannot be set in the file; "),
        ({}, {}, {"log_format": {"a": 1}}, f"{FILE}, key log_format: expected text or json, got a table"),
        (
            {"account_service": "http://127.0.0.1:8081"},
            {},
            {},
            "account_service (flag --account-service) needs account_service_token_file too",
        ),
    ],
)
def test_problems_name_the_key_the_source_and_what_is_expected(
    flags: dict[str, Any], env: dict[str, str], file: dict[str, Any], message: str
) -> None:
    assert only_problem(resolved(flags, env, file)).startswith(message)


def test_every_problem_is_reported_at_once() -> None:
    resolution = resolved(
        {"http_port": "x"}, {"LINKHUB_MQTT_PORT": "y"}, {"poll_interval_s": 99, "colour": "blue"}
    )
    assert len(resolution.problems) == 4
    with pytest.raises(ConfigError) as raised:
        resolution.hub_config()
    assert str(raised.value).count("\n  - ") == 4
    # What `config check` prints for a bad value: as given, marked, with its source.
    assert resolution.setting("http_port").shown == "'x' (not valid)"
    assert resolution.setting("http_port").source == "flag --http-port"


def test_a_rule_only_hubconfig_knows_is_a_problem_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_kwargs: Any) -> HubConfig:
        raise ConfigError("a rule added to HubConfig later")

    monkeypatch.setattr(config_file, "HubConfig", refuse)
    assert only_problem(resolved()) == "a rule added to HubConfig later"


# --- secrets -----------------------------------------------------------------------------------------


def test_passwords_are_never_shown() -> None:
    resolution = resolved(
        file={
            "broker": "mqtt://admin:hunter2@127.0.0.1:1883",
            "database_url": "postgresql+psycopg://linkhub:s3cret@127.0.0.1:5432/linkhub",
            "account_service": "http://127.0.0.1:8081",
            "account_service_token_file": "/run/secrets/token",
        },
        read_secret=lambda _p: "tok3n",
    )
    report = resolution.report()
    config = resolution.hub_config()
    assert "mqtt://admin:***@127.0.0.1:1883" in report
    assert "postgresql+psycopg://linkhub:***@127.0.0.1:5432/linkhub" in report
    for secret in ("hunter2", "s3cret", "tok3n"):
        assert secret not in report
        assert secret not in repr(config)
    bad = resolved(env={"LINKHUB_BROKER": "http://admin:hunter2@127.0.0.1"})
    assert "hunter2" not in only_problem(bad) and "hunter2" not in bad.report()


def test_the_token_file_is_read_and_relative_to_the_file() -> None:
    asked: list[Path] = []

    def read(path: Path) -> str:
        asked.append(path)
        return "tok3n"

    resolution = resolved(
        file={"account_service": "http://127.0.0.1:8081", "account_service_token_file": "token"},
        read_secret=read,
    )
    assert resolution.hub_config().account_service_token == "tok3n"
    assert asked == [FILE.parent / "token"]
    # From the environment or a flag a relative path is the shell's: left as typed.
    from_env = resolved(
        env={
            "LINKHUB_ACCOUNT_SERVICE": "http://127.0.0.1:8081",
            "LINKHUB_ACCOUNT_SERVICE_TOKEN_FILE": "token",
        },
        read_secret=read,
    )
    assert from_env.problems == () and asked[-1] == Path("token")


def test_an_unreadable_token_file_is_a_problem() -> None:
    def unreadable(path: Path) -> str:
        raise PermissionError(13, "Permission denied")

    problem = only_problem(
        resolved(
            {"account_service": "http://127.0.0.1:8081", "account_service_token_file": "/root/token"},
            read_secret=unreadable,
        )
    )
    assert problem == (
        "account_service_token_file (flag --account-service-token-file): "
        "cannot read /root/token: Permission denied"
    )


# --- finding the file and the data directory --------------------------------------------------------


def test_the_file_is_the_flag_then_the_environment_then_the_data_directory() -> None:
    env = {"LINKHUB_CONFIG": "/etc/linkhub.toml"}
    assert config_file.choose_file(Path("/a.toml"), env, DATA) == config_file.FileChoice(
        Path("/a.toml"), "/a.toml (from --config)", True
    )
    assert config_file.choose_file(None, env, DATA).path == Path("/etc/linkhub.toml")
    assert config_file.choose_file(None, env, DATA).required
    fallback = config_file.choose_file(None, {}, DATA)
    assert (fallback.path, fallback.required) == (DATA / "linkhub.toml", False)


def test_the_data_directory_is_the_flag_then_the_environment_then_home() -> None:
    home = Path("/home/pi")
    env = {"LINKHUB_DATA_DIR": "/var/lib/linkhub"}
    assert config_file.data_dir_from(Path("/d"), env, home) == (Path("/d"), "flag --data-dir")
    assert config_file.data_dir_from(None, env, home) == (Path("/var/lib/linkhub"), "env LINKHUB_DATA_DIR")
    assert config_file.data_dir_from(None, {}, home) == (home / ".local/share/linkhub", "default")


def test_load_finds_the_file_in_the_data_directory(tmp_path: Path) -> None:
    (tmp_path / "linkhub.toml").write_text('http_port = 8090\nlog_format = "json"\n')
    resolution = config_file.load({}, {}, data_dir_flag=tmp_path)
    assert resolution.file == tmp_path / "linkhub.toml"
    assert (resolution.hub_config().http_port, resolution.hub_config().log_format) == (8090, "json")
    assert resolution.setting("http_port").source == f"file {tmp_path / 'linkhub.toml'}"


def test_load_without_a_file_is_fine_but_a_named_file_must_exist(tmp_path: Path) -> None:
    assert config_file.load({}, {}, data_dir_flag=tmp_path).problems == ()
    missing = tmp_path / "nope.toml"
    resolution = config_file.load({}, {"LINKHUB_CONFIG": str(missing)}, data_dir_flag=tmp_path)
    assert resolution.problems == (f"{missing}: cannot read it: No such file or directory",)


def test_load_reports_a_toml_syntax_error_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('http_port = 8080\nhttp_host = "127.0.0.1\n')
    (problem,) = config_file.load({}, {}, config_flag=bad, data_dir_flag=tmp_path).problems
    assert problem.startswith(f"{bad}: not valid TOML: ") and "line 2" in problem


# --- the command line ----------------------------------------------------------------------------------


def test_flags_not_given_leave_the_environment_and_file_alone(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["run", "--data-dir", str(tmp_path)])
    assert config_file.flags_from(args) == {}
    args = cli.build_parser().parse_args(
        ["run", "--http-port", "81", "--no-mdns", "--mdns-interface", "eth0", "--database-url", "sqlite://"]
    )
    assert config_file.flags_from(args) == {
        "http_port": "81",
        "mdns": False,
        "mdns_interfaces": ["eth0"],
        "database_url": "sqlite://",
    }


def test_linkhub_run_reads_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key.env, raising=False)
    monkeypatch.setenv("LINKHUB_MQTT_PORT", "1999")
    (tmp_path / "linkhub.toml").write_text("http_port = 8090\nmqtt_port = 1888\nmdns = false\n")
    args = cli.build_parser().parse_args(["run", "--data-dir", str(tmp_path), "--http-port", "8091"])
    config = cli.run_config(args)
    assert (config.http_port, config.mqtt_port, config.mdns) == (8091, 1999, False)


def test_config_check_says_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in KEYS:
        monkeypatch.delenv(key.env, raising=False)
    monkeypatch.setenv("LINKHUB_HTTP_PORT", "8099")
    (tmp_path / "linkhub.toml").write_text('broker = "mqtt://admin:hunter2@127.0.0.1:1883"\n')
    assert cli.main(["config", "check", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("configuration OK")
    assert re.search(r"http_port\s+8099\s+\(env LINKHUB_HTTP_PORT\)", out)
    assert re.search(rf"broker\s+mqtt://admin:\*\*\*@127.0.0.1:1883\s+\(file {tmp_path}/linkhub.toml\)", out)
    assert re.search(rf"data_dir\s+{tmp_path}\s+\(flag --data-dir\)", out)
    assert "hunter2" not in out


def test_config_check_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in KEYS:
        monkeypatch.delenv(key.env, raising=False)
    monkeypatch.setenv("LINKHUB_MQTT_PORT", "one thousand")
    config = tmp_path / "hub.toml"
    config.write_text('http_port = "8080"\nhttp-port = 8080\n')
    assert cli.main(["config", "check", "--config", str(config), "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "configuration OK" not in out
    assert "3 problems:" in out
    assert f"  - {config}, key http-port: unknown key (did you mean http_port?)" in out
    assert (
        f"  - {config}, key http_port: expected a whole number (without quotes), got the text '8080'" in out
    )
    assert "  - environment variable LINKHUB_MQTT_PORT: expected a whole number" in out


def test_linkhub_run_refuses_a_bad_configuration_in_plain_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKHUB_HTTP_PORT", "http")
    assert cli.main(["run", "--data-dir", str(tmp_path), "--no-mdns"]) == 1
    err = capsys.readouterr().err
    assert "linkhub: the configuration is not valid:" in err
    assert (
        "environment variable LINKHUB_HTTP_PORT: expected a whole number from 0 to 65535, got 'http'" in err
    )


# --- the documentation -----------------------------------------------------------------------------------


def test_the_documentation_names_every_key_flag_and_variable() -> None:
    docs = DOCS.read_text()
    for key in KEYS:
        row = next((line for line in docs.splitlines() if line.startswith(f"| `{key.name}`")), None)
        assert row is not None, f"docs/configuration.md has no row for {key.name}"
        assert f"`{key.env}`" in row and key.flag in row, row
    assert "flag > environment > file > default" in docs


@pytest.mark.parametrize("rate", ["0 per minute", "5 per fortnight", "lots", "5 per minute; 6 per hour"])
def test_link_request_limits_must_be_one_usable_rate(rate: str) -> None:
    problem = only_problem(resolved(env={"LINKHUB_LINK_REQUESTS_TOTAL": rate}))
    expected = "environment variable LINKHUB_LINK_REQUESTS_TOTAL: expected a rate of at least 1"
    assert problem.startswith(expected), problem
    assert only_problem(resolved(file={"max_pending_requests": 0})).endswith("from 1 to 100000, got 0")


def test_a_broker_password_on_the_command_line_is_warned_about() -> None:
    """Any local user reads a process's arguments; the environment and a 0600 file are private."""
    url = "mqtt://admin:s3cret@127.0.0.1:1883"
    warning = password_on_command_line(resolved(flags={"broker": url}))
    assert warning is not None and "LINKHUB_BROKER" in warning and "s3cret" not in warning
    assert password_on_command_line(resolved(env={"LINKHUB_BROKER": url})) is None
    assert password_on_command_line(resolved(file={"broker": url})) is None
    assert password_on_command_line(resolved()) is None


def test_linkhub_run_prints_the_warning_before_it_starts(capsys: pytest.CaptureFixture[str]) -> None:
    """`linkhub run --broker URL-with-password`, stopped by a bad value before anything starts."""
    code = linkhub_main(
        ["run", "--data-dir", "/nonexistent/linkhub", "--broker", "mqtt://admin:s3cret@127.0.0.1:1883",
         "--http-port", "99999"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "warning: --broker carries the broker's admin password" in err
    assert "s3cret" not in err


def test_sessions_last_12_hours_on_plain_http_and_30_days_with_https() -> None:
    plain = resolved().hub_config()
    assert (plain.https_port, plain.session_lifetime_s) == (0, 12 * 3600)
    assert resolved(flags={"https_port": "8443"}).hub_config().session_lifetime_s == 30 * 86400
    chosen = resolved(flags={"https_port": "8443", "web_session_lifetime_s": "600"}).hub_config()
    assert chosen.session_lifetime_s == 600
    assert "https_port" in only_problem(resolved(flags={"https_port": "8080"}))  # the HTTP port's


def test_the_link_page_url_is_https_whenever_the_hub_serves_https() -> None:
    assert link_page_url("192.168.1.10", http_port=8080) == "http://192.168.1.10:8080/link"
    assert link_page_url("192.168.1.10", http_port=8080, https_port=8443) == "https://192.168.1.10:8443/link"
    assert link_page_url("hub.local", http_port=80, https_port=443) == "https://hub.local/link"
