"""Settings loading (defaults < TOML < ROOST_* env < flags), validation and ``roost serve``."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import pytest

from roost import cli
from roost.config import FIELD_TYPES, RANGES, Settings, load_settings, validate
from roost.errors import ConfigError


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "roost.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_valid() -> None:
    assert load_settings() == Settings()


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, 'port = 1000\nmax_inflight = 10\nhost = "0.0.0.0"\n')
    env = {"ROOST_PORT": "2000", "ROOST_MAX_INFLIGHT": "20", "ROOST_NOT_A_SETTING": "x"}
    args = {"port": 3000, "max_inflight": None, "config": path, "func": print}
    settings = load_settings(args, env, path)
    assert (settings.port, settings.max_inflight, settings.host) == (3000, 20, "0.0.0.0")
    assert settings.max_packet_size == Settings().max_packet_size


def test_unknown_toml_key_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "prot = 1884\n")
    with pytest.raises(ConfigError, match=r"'prot'.*roost\.toml"):
        load_settings(config_path=path)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [("port = 'abc'\n", "'port'.*integer"), ("retain_available = 1\n", "'retain_available'")],
)
def test_toml_type_errors_name_setting(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_settings(config_path=_write(tmp_path, text))


def test_unreadable_or_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(config_path=str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_path=_write(tmp_path, "port = \n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [(word, True) for word in ("true", "TRUE", "1", "yes", "On")]
    + [(word, False) for word in ("false", "False", "0", "no", "OFF")],
)
def test_env_bool_parsing(text: str, expected: bool) -> None:
    settings = load_settings(env={"ROOST_STRICT_CLIENT_ID": text, "ROOST_RETAIN_AVAILABLE": text})
    assert settings.strict_client_id is expected
    assert settings.retain_available is expected


@pytest.mark.parametrize(
    ("var", "text"),
    [("ROOST_PORT", "abc"), ("ROOST_RETAIN_AVAILABLE", "maybe"), ("ROOST_PORT", "1.5")],
)
def test_env_type_errors_name_variable(var: str, text: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings(env={var: text})


def test_flags_must_be_typed() -> None:
    with pytest.raises(ConfigError, match="'port'"):
        load_settings({"port": "1883"})


def _out_of_range() -> list[tuple[str, int]]:
    cases = []
    for name, (low, high) in RANGES.items():
        cases.append((name, low - 1))
        if high is not None:
            cases.append((name, high + 1))
    return cases


@pytest.mark.parametrize(("name", "value"), _out_of_range())
def test_range_errors_name_setting_value_and_bounds(name: str, value: int) -> None:
    low, high = RANGES[name]
    with pytest.raises(ConfigError) as info:
        validate(dataclasses.replace(Settings(), **{name: value}))
    message = str(info.value)
    assert repr(name) in message and str(value) in message and str(low) in message
    validate(dataclasses.replace(Settings(), **{name: low}))
    if high is not None:
        validate(dataclasses.replace(Settings(), **{name: high}))


def test_specific_bounds() -> None:
    assert RANGES["max_packet_size"] == (16, 268_435_460)
    assert RANGES["max_keep_alive"] == (1, 65535)


@pytest.mark.parametrize(("name", "value"), [("log_level", "verbose"), ("store", "redis")])
def test_choice_errors_list_allowed_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{name}'.*'{value}'.*allowed: .*(info|memory)"):
        validate(dataclasses.replace(Settings(), **{name: value}))


def test_validate_rejects_wrong_type_in_directly_built_settings() -> None:
    with pytest.raises(ConfigError, match="'max_inflight'"):
        validate(Settings(max_inflight=True))


def test_serve_rejects_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--port", "99999"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roost: error: ") and "'port'" in err


def test_serve_rejects_non_integer_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--max-packet-size", "abc"])
    assert info.value.code == 2
    assert "--max-packet-size" in capsys.readouterr().err


def test_serve_merges_sources_and_runs_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Settings] = []

    def run(settings: Settings) -> int:
        seen.append(settings)
        return 7

    monkeypatch.setitem(sys.modules, "roost.broker", types.SimpleNamespace(run=run))
    monkeypatch.setenv("ROOST_MAX_INFLIGHT", "5")
    monkeypatch.setenv("ROOST_PORT", "1234")
    path = _write(tmp_path, "port = 1000\nretain_available = true\n")
    argv = ["serve", "--config", path, "--port", "2000", "--no-retain-available"]
    assert cli.main(argv) == 7
    assert (seen[0].port, seen[0].max_inflight, seen[0].retain_available) == (2000, 5, False)


def test_every_setting_has_a_flag() -> None:
    """Every flat setting; the [[listeners]] tables are TOML only."""
    parser = cli.build_parser()
    args = parser.parse_args(["serve"])
    assert set(FIELD_TYPES) == {f.name for f in dataclasses.fields(Settings)} - {"listeners"}
    assert set(FIELD_TYPES) <= set(vars(args))
    assert all(getattr(args, name) is None for name in FIELD_TYPES)
