"""Building a client from the environment's settings (docs/architecture.md §4.1) or explicit fields."""

from __future__ import annotations

import pytest

from rutter_pipeline.rutter import ClientConfig, RutterClient
from rutter_pipeline.settings import Settings

ENV = {
    "RUTTER_BASE_URL": "http://127.0.0.1:1/versioned/",
    "RUTTER_CLIENT_ID": "org-from-env",
    "RUTTER_CLIENT_SECRET": "secret-from-env-123",
    "RUTTER_API_VERSION": "2024-08-31",
    "RUTTER_PAGE_LIMIT": "250",
    "RUTTER_WINDOW_FRAGMENTS": "5",
    "RUTTER_MAX_REQUESTS_PER_10S": "300",
}


def test_config_from_settings_takes_every_client_variable() -> None:
    config = ClientConfig.from_settings(Settings.from_env(ENV), read_timeout_s=7.5)
    assert (config.base_url, config.client_id, config.client_secret) == (
        "http://127.0.0.1:1/versioned",
        "org-from-env",
        "secret-from-env-123",
    )
    assert (config.api_version, config.page_limit, config.window_fragments) == ("2024-08-31", 250, 5)
    assert config.max_requests_per_10s == 300 and config.read_timeout_s == 7.5
    assert "secret-from-env-123" not in repr(config)


def test_client_from_settings_uses_the_configured_headers_and_limiter() -> None:
    client = RutterClient.from_settings(Settings.from_env(ENV))
    assert client.config.page_limit == 250
    assert client._transport.session.headers["X-Rutter-Version"] == "2024-08-31"
    assert client._transport.limiter.max_requests == 300
    assert "secret-from-env-123" not in repr(client)


def test_bad_configuration_is_refused_with_the_variable_to_fix() -> None:
    with pytest.raises(ValueError, match="RUTTER_CLIENT_ID and RUTTER_CLIENT_SECRET"):
        ClientConfig.from_settings(Settings.from_env({}))
    with pytest.raises(ValueError, match="page_limit must be between 1 and 500"):
        ClientConfig(base_url="http://x", client_id="a", client_secret="b", page_limit=501)
    with pytest.raises(TypeError, match="unknown ClientConfig fields: page_size"):
        ClientConfig.from_settings(Settings.from_env(ENV), page_size=10)
