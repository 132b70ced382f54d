"""``verify`` accepts the webhooks the sandbox really sends and rejects forged, missing, malformed ones."""

from __future__ import annotations

import orjson

from rutter_pipeline.rutter.signatures import HEADER, sign, verify
from rutter_pipeline.sandbox import SandboxHandle
from rutter_pipeline_tests.rutter.scripted_server import Reply, ScriptedServer


def test_verify_accepts_sandbox_webhooks_and_rejects_forgeries(
    sandbox: SandboxHandle, scripted: ScriptedServer
) -> None:
    scripted.handler = lambda _seen: Reply(200, {"ok": True})
    sandbox.control.configure_webhooks(url=f"{scripted.base_url.removesuffix('/versioned')}/webhooks/rutter")
    conn = sandbox.control.create_connection(orders_per_day=5, history_days=2, ready=False)
    sandbox.control.action(conn["connection_id"], "complete_initial_sync")
    sandbox.control.wait_for_webhooks()
    posts = [s for s in scripted.seen if s.method == "POST"]
    assert posts, "the sandbox delivered no webhook"
    secret = sandbox.client_secret
    codes = []
    for post in posts:
        header = post.headers.get(HEADER)
        assert verify(post.body, header, secret), "a genuine sandbox webhook failed verification"
        assert sign(post.body, secret) == header
        codes.append(orjson.loads(post.body)["code"])
    assert "INITIAL_UPDATE" in codes
    body, header = posts[0].body, posts[0].headers[HEADER]
    forged = body.replace(b"INITIAL_UPDATE", b"CONNECTION_DISABLED") if b"INITIAL_UPDATE" in body else body + b" "
    assert not verify(forged, header, secret)  # body changed, signature kept
    assert not verify(body, sign(body, "guessed-secret"), secret)  # signed with the wrong key
    assert not verify(body, None, secret)  # missing
    assert not verify(body, header.removeprefix("sha256="), secret)  # malformed: no scheme
    assert not verify(body, "sha256=%%%", secret)  # malformed: not base64
