"""Webhook signature helpers (the sandbox's own webhooks are checked in test_sandbox_webhooks)."""

from __future__ import annotations

from rutter_pipeline.rutter.signatures import sign, verify

# Computed independently: printf 'hello' | openssl dgst -sha256 -hmac 'topsecret' -binary | base64
KNOWN = "sha256=7Xb9NlI7i+zaWjs20ONzforlER9V4mx8OkVaPOKWNtI="


def test_sign_matches_an_independent_hmac() -> None:
    assert sign(b"hello", "topsecret") == KNOWN


def test_verify_accepts_only_the_right_signature() -> None:
    assert verify(b"hello", KNOWN, "topsecret")
    assert verify(b"hello", f"  {KNOWN} ", "topsecret")
    assert not verify(b"hello!", KNOWN, "topsecret")  # body changed
    assert not verify(b"hello", KNOWN, "othersecret")  # wrong key
    assert not verify(b"hello", None, "topsecret")
    assert not verify(b"hello", "", "topsecret")
    assert not verify(b"hello", KNOWN.removeprefix("sha256="), "topsecret")  # no prefix
    assert not verify(b"hello", "sha256=not base64!!", "topsecret")
    assert not verify(b"hello", "sha1=" + KNOWN.removeprefix("sha256="), "topsecret")
    assert not verify(b"hello", "sha256=" + "A" * 44, "topsecret")
    assert not verify(b"hello", KNOWN, "")
