"""Access tokens and the client secret stay out of logs (urllib3 DEBUG included) and exceptions."""

from __future__ import annotations

import base64
import logging

import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.rutter import RutterError
from rutter_pipeline.rutter.redact import redact, register_secret
from rutter_pipeline_tests.rutter.conftest import ClientFactory
from rutter_pipeline_tests.rutter.scripted_server import Reply, ScriptedServer
from rutter_pipeline_tests.rutter.secrets_check import assert_no_secret, exception_texts

TOKEN = "access-sandbox-de3ce8ef-33f8-452c-a685-8671031fc0f6"
SECRET = "very-secret-client-secret-1234"
SECRETS = [TOKEN, SECRET, base64.b64encode(f"org-id:{SECRET}".encode()).decode()]


def test_redact_masks_query_tokens_basic_auth_and_registered_values() -> None:
    register_secret("registered-token-xyz")
    text = (
        "GET /versioned/orders?access_token=abc-123&limit=5 HTTP/1.1; "
        "Authorization: Basic b3JnLWlkOnNlY3JldA==; {'access_token': 'tok-in-json'}; registered-token-xyz"
    )
    cleaned = redact(text)
    for leaked in ("abc-123", "b3JnLWlkOnNlY3JldA==", "tok-in-json", "registered-token-xyz"):
        assert leaked not in cleaned
    assert "access_token=***&limit=5" in cleaned


@pytest.mark.parametrize(
    "reply",
    [
        Reply(401, {"error_code": "INVALID_CREDENTIALS", "error_message": f"bad token {TOKEN}"}),
        Reply(404, {"error_code": "NOT_FOUND", "error_message": "no such order"}),
        Reply(500, {"error_code": "INTERNAL", "error_message": "boom"}),
        Reply(200, b"{broken"),
        Reply(drop=True),
        Reply(body=b"{}", delay_s=0.4),  # read timeout
    ],
    ids=["401-echoing-token", "404", "500-exhausted", "broken-body", "dropped", "timeout"],
)
def test_no_secret_in_logs_or_exceptions(
    scripted: ScriptedServer, client_for: ClientFactory, caplog: pytest.LogCaptureFixture, reply: Reply
) -> None:
    scripted.handler = lambda _seen: reply
    client = client_for(scripted, client_secret=SECRET, max_attempts=2, read_timeout_s=0.2)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RutterError) as info:
        list(client.iter_pages(ORDERS, TOKEN, created_at_min=0, created_at_max=10))
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # DEBUG capture really ran
    if not (reply.drop or reply.delay_s):  # urllib3 logs the URL once an answer arrives
        assert any("/orders?access_token=***" in r.getMessage() for r in caplog.records)
    assert_no_secret(SECRETS, caplog.text, *(r.getMessage() for r in caplog.records))
    assert_no_secret(SECRETS, *exception_texts(info.value))
    assert_no_secret(SECRETS, repr(client), repr(client.config), str(client.stats.snapshot()))


def test_logged_exceptions_are_redacted_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("urllib3.connectionpool")
    try:
        raise RuntimeError(f"failed GET /orders?access_token={TOKEN}")
    except RuntimeError:
        log.exception("request to %s failed", f"/orders?access_token={TOKEN}")
    assert "access_token=***" in caplog.text
    assert TOKEN not in caplog.text
