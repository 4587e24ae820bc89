"""The one settings object of ``sentiserve serve``: precedence (defaults < file < environment
< options), nested and short environment names, device defaults in one place, and one clear
line for a bad value or file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiserve.cli import build_app
from sentiserve.cli.serve import FIELDS, overrides
from sentiserve.errors import ConfigError
from sentiserve.serve.app import ServerConfig
from sentiserve.serve.batcher import BatchingConfig
from sentiserve.serve.settings import SHORT_ENV, ServeSettings

REPO = Path("repo")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SENTISERVE_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_runtime_defaults_on_cpu() -> None:
    config = ServeSettings.load().server_config(REPO, "cpu")
    default = ServerConfig(repository=REPO)
    assert config == default
    assert config.grpc_port == 8001


def test_gpu_defaults_are_applied_in_one_place_and_options_still_win() -> None:
    gpu = ServeSettings.load().server_config(REPO, "cuda").batching
    assert (gpu.max_batch_size, gpu.max_batch_tokens, gpu.max_queue_size) == (128, 16_384, 2048)
    chosen = ServeSettings.load(batching={"max_batch_size": 16}).server_config(REPO, "cuda")
    assert chosen.batching.max_batch_size == 16
    # A gateway batches nothing itself: CPU defaults whatever the device.
    gateway = ServeSettings.load(gateway={"backend": "triton"}).server_config(REPO, "cuda")
    assert gateway.batching == BatchingConfig()
    assert gateway.triton_url == "127.0.0.1:8001"


def test_file_then_environment_then_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "serve.yaml"
    file.write_text(
        "host: 0.0.0.0\n"
        "limits:\n  max_in_flight: 64\n  max_texts: 8\n"
        "http:\n  port: 9000\n"
        "batching:\n  max_queue_delay_ms: 2\n"
    )
    from_file = ServeSettings.load(file)
    assert (from_file.host, from_file.limits.max_in_flight, from_file.http.port) == (
        "0.0.0.0",
        64,
        9000,
    )
    monkeypatch.setenv("SENTISERVE_LIMITS__MAX_IN_FLIGHT", "32")
    monkeypatch.setenv("SENTISERVE_HOST", "127.0.0.2")
    from_env = ServeSettings.load(file)
    assert (from_env.host, from_env.limits.max_in_flight) == ("127.0.0.2", 32)
    assert from_env.limits.max_texts == 8, "a section's other fields still come from the file"
    from_cli = ServeSettings.load(file, limits={"max_in_flight": 4}, http={"port": 9100})
    config = from_cli.server_config(REPO, "cpu")
    assert config.transport.max_in_flight == 4
    assert (config.http_port, config.limits.max_texts, config.host) == (9100, 8, "127.0.0.2")
    assert config.batching.max_queue_delay_ms == 2


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_json_and_toml_files(tmp_path: Path, suffix: str) -> None:
    file = tmp_path / f"serve{suffix}"
    if suffix == ".json":
        file.write_text('{"grpc": {"port": 0}, "instances": {"count": 3}}')
    else:
        file.write_text("[grpc]\nport = 0\n[instances]\ncount = 3\n")
    config = ServeSettings.load(file).server_config(REPO, "cpu")
    assert config.grpc_port is None, "port 0 turns gRPC off"
    assert config.instances.count == 3


def test_short_environment_names_still_work_below_the_nested_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTISERVE_TRITON_URL", "dns:///triton:8001")
    monkeypatch.setenv("SENTISERVE_BACKEND", "triton")
    monkeypatch.setenv("SENTISERVE_THREADS", "2")
    monkeypatch.setenv("SENTISERVE_API_KEY", "a-long-key-1")
    settings = ServeSettings.load()
    assert settings.gateway_mode
    assert settings.gateway.triton_url == "dns:///triton:8001"
    assert settings.instances.threads == 2
    assert settings.auth.api_key == "a-long-key-1"
    monkeypatch.setenv("SENTISERVE_INSTANCES__THREADS", "1")
    assert ServeSettings.load().instances.threads == 1
    assert set(SHORT_ENV) >= {"SENTISERVE_API_KEYS_FILE"}


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("limits:\n  max_in_flight: 0\n", ".yaml", "limits.max_in_flight"),
        ("limits:\n  max_inflight: 3\n", ".yaml", "limits.max_inflight"),
        ("- a\n- b\n", ".yaml", "must hold one mapping"),
        ("{", ".json", "cannot read the settings file"),
        ("host = 1", ".ini", "is .yaml, .yml, .json or .toml"),
        ("auth:\n  api_key: short\n", ".yaml", "auth.api_key"),
    ],
)
def test_bad_settings_are_one_clear_error(
    tmp_path: Path, text: str, suffix: str, message: str
) -> None:
    file = tmp_path / f"serve{suffix}"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        ServeSettings.load(file)


def test_a_bad_setting_in_the_environment_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTISERVE_LIMITS__TIMEOUT_S", "-1")
    with pytest.raises(ConfigError, match=r"limits\.timeout_s"):
        ServeSettings.load()


def test_every_option_overrides_a_field_that_exists() -> None:
    given = dict.fromkeys(FIELDS, 1)
    settings_fields = ServeSettings.model_fields
    for path in FIELDS.values():
        section, _, field = path.rpartition(".")
        model = settings_fields[section].annotation if section else ServeSettings
        assert field in model.model_fields, path  # type: ignore[union-attr]
    nested = overrides({**given, "config": "x", "unset": None})
    assert nested["limits"]["max_in_flight"] == 1
    assert "config" not in nested


def test_the_cli_reports_a_bad_settings_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "serve.yaml"
    bad.write_text("limits:\n  max_in_flight: 0\n")
    result = CliRunner().invoke(build_app(), ["serve", "--config", str(bad)])
    assert result.exit_code == 1
    assert "invalid setting limits.max_in_flight" in result.output
    assert "Traceback" not in result.output
