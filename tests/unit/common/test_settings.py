from __future__ import annotations

from pathlib import Path

import pytest

from services.common.settings import ALL_SERVICES, Settings, parse_services, settings_markdown


def test_defaults_give_the_embedded_mode() -> None:
    settings = Settings.from_env({})
    assert settings.enabled_services == ALL_SERVICES
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.resolved_database_url.endswith("/.hacs/hacs.db")
    assert settings.grpc_listen == "127.0.0.1:50051"
    assert settings.token_ttl_seconds == 900 and settings.auto_migrate is True
    # /metrics names every tenant: only the host's scraper may read it (issue 20, finding 10).
    assert settings.http_listen.startswith("127.0.0.1:")
    assert settings.revocation_seconds == 5  # the documented revocation bound


def test_the_revocation_bound_cannot_be_configured_past_five_seconds() -> None:
    with pytest.raises(ValueError, match="HACS_REVOCATION_SECONDS must be at most 5"):
        Settings.from_env({"HACS_REVOCATION_SECONDS": "60"})


def test_environment_overrides_and_types() -> None:
    settings = Settings.from_env(
        {
            "HACS_DATABASE_URL": "postgresql+asyncpg://u:p@db/hacs",
            "HACS_AUTO_MIGRATE": "false",
            "HACS_SERVICES": "search, rag",
            "HACS_TOKEN_TTL_SECONDS": "60",
        }
    )
    assert settings.resolved_database_url == "postgresql+asyncpg://u:p@db/hacs"
    assert settings.auto_migrate is False
    assert settings.enabled_services == ("search", "rag")
    assert settings.token_ttl_seconds == 60


def test_bad_values_are_named_at_start() -> None:
    with pytest.raises(ValueError) as caught:
        Settings.from_env({"HACS_TOKEN_TTL_SECONDS": "soon", "HACS_AUTO_MIGRATE": "maybe"})
    assert "HACS_TOKEN_TTL_SECONDS='soon'" in str(caught.value)
    assert "HACS_AUTO_MIGRATE='maybe'" in str(caught.value)
    with pytest.raises(ValueError, match="HACS_GRPC_LISTEN"):
        Settings.from_env({"HACS_GRPC_LISTEN": "50051"})
    with pytest.raises(ValueError, match="unknown service"):
        Settings.from_env({"HACS_SERVICES": "search,billing"})
    with pytest.raises(ValueError, match="HACS_MILVUS_READ_CONSISTENCY='session'"):
        Settings.from_env({"HACS_MILVUS_READ_CONSISTENCY": "session"})
    with pytest.raises(ValueError, match="HACS_MILVUS_CLIENT_THREADS"):
        Settings.from_env({"HACS_MILVUS_CLIENT_THREADS": "0"})
    with pytest.raises(ValueError, match="HACS_EMBEDDING_WORKER='pod' must be process or thread"):
        Settings.from_env({"HACS_EMBEDDING_WORKER": "pod"})


def test_parse_services_keeps_order_and_drops_repeats() -> None:
    assert parse_services("rag,search,rag") == ("rag", "search")


def test_markdown_table_lists_every_variable() -> None:
    table = settings_markdown()
    for name in ("HACS_DATA_DIR", "HACS_DATABASE_URL", "HACS_JWKS_URL", "HACS_SERVICES"):
        assert f"`{name}`" in table


def test_credentials_come_from_files_a_mounted_secret_holds(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("postgresql+asyncpg://hacs:s3cret@db:5432/hacs\n")
    settings = Settings.from_env({"HACS_DATABASE_URL_FILE": str(url_file)})
    assert settings.database_url == "postgresql+asyncpg://hacs:s3cret@db:5432/hacs"
    # The variable itself wins over the file.
    both = {"HACS_DATABASE_URL_FILE": str(url_file), "HACS_DATABASE_URL": "sqlite+aiosqlite://"}
    assert Settings.from_env(both).database_url == "sqlite+aiosqlite://"


def test_an_unreadable_credential_file_fails_naming_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ValueError, match="HACS_REDIS_URL"):
        Settings.from_env({"HACS_REDIS_URL_FILE": str(missing)})


def test_hacs_config_never_prints_a_credential(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.cli import main

    monkeypatch.setenv("HACS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HACS_DATABASE_URL", "postgresql+asyncpg://hacs:s3cret@db:5432/hacs")
    monkeypatch.setenv("HACS_BOOTSTRAP_OPERATOR_KEY", "hacs_op_supersecretvalue")
    assert main(["config"]) == 0
    printed = capsys.readouterr().out
    assert "s3cret" not in printed and "supersecretvalue" not in printed
    assert "HACS_DATABASE_URL=(set)" in printed
    assert f"HACS_DATA_DIR={tmp_path}" in printed


def test_plaintext_stays_on_loopback() -> None:
    for listen in ("0.0.0.0:50051", "10.0.0.7:50051", "[::]:50051", "hacs-search:50051"):
        with pytest.raises(ValueError, match="not a loopback address and HACS_TLS=off"):
            Settings.from_env({"HACS_GRPC_LISTEN": listen})
    with pytest.raises(ValueError, match="HACS_HTTP_LISTEN"):
        Settings.from_env({"HACS_HTTP_LISTEN": "0.0.0.0:9464"})
    for listen in ("127.0.0.1:50051", "localhost:50051", "[::1]:50051", "127.0.0.2:1"):
        assert Settings.from_env({"HACS_GRPC_LISTEN": listen}).tls == "off"
    # With TLS of its own, or behind a sidecar that carries mTLS, any address.
    for mode in ("on", "external"):
        settings = Settings.from_env({"HACS_TLS": mode, "HACS_GRPC_LISTEN": "0.0.0.0:50051"})
        assert settings.grpc_listen == "0.0.0.0:50051"
    with pytest.raises(ValueError, match="HACS_TLS='yes' must be off, on or external"):
        Settings.from_env({"HACS_TLS": "yes"})
    with pytest.raises(ValueError, match="HACS_TLS_CLIENT_AUTH='never'"):
        Settings.from_env({"HACS_TLS": "on", "HACS_TLS_CLIENT_AUTH": "never"})


def test_the_certificate_of_a_process_is_named_for_what_it_hosts(tmp_path: Path) -> None:
    from services.common.runtime.tls import tls_files

    base = {"HACS_DATA_DIR": str(tmp_path), "HACS_TLS": "on"}
    one = tls_files(Settings.from_env({**base, "HACS_SERVICES": "search"}))
    assert (one.cert, one.key, one.ca) == (
        tmp_path.resolve() / "tls/search.pem",
        tmp_path.resolve() / "tls/search-key.pem",
        tmp_path.resolve() / "tls/ca.pem",
    )
    assert tls_files(Settings.from_env(base)).cert.name == "serve.pem"
    given = tls_files(Settings.from_env({**base, "HACS_TLS_CERT_FILE": "/etc/hacs/tls/tls.crt"}))
    assert given.cert == Path("/etc/hacs/tls/tls.crt") and given.key.name == "serve-key.pem"
