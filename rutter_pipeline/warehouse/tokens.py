"""Access tokens at rest: Fernet ciphertext in ``rutter.connections.token_ciphertext``.

A Rutter access token reads a merchant's whole order history, so a dump or a backup of the
warehouse alone must not give it away: tokens are stored encrypted with ``cryptography``'s Fernet
(AES-128-CBC with an HMAC, a timestamp and a random IV per token), and the key lives outside the
warehouse, in ``RUTTER_TOKEN_KEY``.

``RUTTER_TOKEN_KEY`` is one or more Fernet keys separated by commas. The first encrypts; all of them
decrypt (``MultiFernet``), which is how a key is rotated without downtime: put the new key first,
keep the old one after it, run ``rutter-pipeline connections rotate-key`` (every token re-encrypted
under the new key), then drop the old key.

Without ``RUTTER_TOKEN_KEY``, only the embedded warehouse of the state folder (``dev``, ``demo``) has
a key: ``<state>/token.key``, generated on first use with mode 0600; the stack's processes find it
through ``RUTTER_TOKEN_KEY_FILE``, which ``prepare_stack_env`` exports when it starts the embedded
server (a path, not a secret, so ``rutter-pipeline env`` may print it). The key then sits next to
the data, which protects a dump but not the folder: fine for a laptop, not for a deployment, so any
other warehouse without a key is refused with :class:`TokenKeyMissing`.

Rows written before encryption (migration 0008 adds the column but cannot know the key) are
encrypted by :func:`encrypt_clear_tokens`, which :func:`~rutter_pipeline.warehouse.migrations.migrate`
runs after the schema migrations; from 0008 on the table refuses a clear-text token outright.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from rutter_pipeline.settings import Settings, state_dir

log = logging.getLogger(__name__)

KEY_ENV = "RUTTER_TOKEN_KEY"
KEY_FILE_ENV = "RUTTER_TOKEN_KEY_FILE"
KEY_FILE = "token.key"


class TokenKeyMissing(RuntimeError):
    """No key for a warehouse that is not the embedded one: tokens cannot be stored or read."""


class TokenKeyError(RuntimeError):
    """A stored token does not decrypt with any key of ``RUTTER_TOKEN_KEY`` (never carries the token)."""


class TokenCipher:
    """Encrypts with the first key, decrypts with any of them."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError(f"{KEY_ENV} holds no key")
        try:
            self._fernets = [Fernet(k.encode()) for k in keys]
        except (ValueError, TypeError) as exc:
            # The message names the variable, never its value.
            raise ValueError(
                f"{KEY_ENV} must be Fernet keys (32 url-safe base64-encoded bytes) separated by commas; "
                "make one with `rutter-pipeline connections new-key`"
            ) from exc
        self._multi = MultiFernet(self._fernets)

    def encrypt(self, token: str) -> str:
        return self._fernets[0].encrypt(token.encode()).decode()

    def decrypt(self, ciphertext: str, connection_id: str = "?") -> str:
        try:
            return self._multi.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise TokenKeyError(
                f"the access token of connection {connection_id!r} does not decrypt with any key of {KEY_ENV} "
                "(a wrong key, or an old key dropped before `rutter-pipeline connections rotate-key` ran)"
            ) from None

    def rotate(self, ciphertext: str, connection_id: str = "?") -> str:
        """The same token encrypted under the first key."""
        try:
            return self._multi.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            self.decrypt(ciphertext, connection_id)  # raises the readable error
            raise

    def is_current(self, ciphertext: str) -> bool:
        """Whether the first key alone decrypts it (after a rotation, the old keys may go)."""
        try:
            self._fernets[0].decrypt(ciphertext.encode())
        except InvalidToken:
            return False
        return True


def new_key() -> str:
    return Fernet.generate_key().decode()


def key_file() -> Path:
    return state_dir() / KEY_FILE


def ensure_key_file(path: Path | None = None) -> Path:
    """The state folder's key file, created once (O_EXCL: two processes starting together agree on one)."""
    path = path or key_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(new_key())
    log.info("generated the token key of the embedded warehouse in %s", path)
    return path


def _split(raw: str) -> list[str]:
    return [k.strip() for k in raw.split(",") if k.strip()]


def token_keys(env: dict[str, str] | None = None) -> list[str]:
    """``RUTTER_TOKEN_KEY``; else the file ``RUTTER_TOKEN_KEY_FILE`` names (the embedded stack's); else,
    when no WAREHOUSE_URL is set (the embedded default of this state folder), ``<state>/token.key``."""
    settings = Settings.from_env(env)
    keys = _split(settings.token_key or "")
    if keys:
        return keys
    if settings.token_key_file:
        path = Path(settings.token_key_file)
        if not path.is_file():
            raise TokenKeyMissing(f"{KEY_FILE_ENV} names {path}, which does not exist")
        return _split(path.read_text())
    if not settings.warehouse_url:
        return _split(ensure_key_file().read_text())
    raise TokenKeyMissing(
        f"{KEY_ENV} is not set: access tokens are stored encrypted and this warehouse is not the embedded "
        f"one. Set {KEY_ENV} to a Fernet key (`rutter-pipeline connections new-key` prints one) in the "
        "environment of every process of the pipeline, and keep it out of the warehouse and its backups."
    )


@lru_cache(maxsize=8)
def _cipher(keys: tuple[str, ...]) -> TokenCipher:
    return TokenCipher(list(keys))


def token_cipher(env: dict[str, str] | None = None) -> TokenCipher:
    """The cipher of the environment's keys (see :func:`token_keys`), built once per set of keys."""
    return _cipher(tuple(token_keys(env)))


def _psycopg_url(url: str) -> str:
    from rutter_pipeline.warehouse.migrations import psycopg_url

    return psycopg_url(url)


def encrypt_clear_tokens(url: str, cipher: TokenCipher | None = None) -> int:
    """Encrypt the tokens still stored in clear text (rows from before migration 0008); return how many.

    One transaction; the rows are locked, so a concurrent caller waits and then finds nothing left.
    With no clear-text row it needs no key, so a fresh warehouse migrates without one.
    """
    with psycopg.connect(_psycopg_url(url)) as conn:
        rows = conn.execute(
            "SELECT connection_id, access_token FROM rutter.connections WHERE access_token IS NOT NULL "
            "ORDER BY connection_id FOR UPDATE"
        ).fetchall()
        if not rows:
            return 0
        cipher = cipher or token_cipher()
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE rutter.connections SET token_ciphertext = %s, access_token = NULL WHERE connection_id = %s",
                [(cipher.encrypt(token), connection_id) for connection_id, token in rows],
            )
    log.info("encrypted the access tokens of %d connections stored in clear text", len(rows))
    return len(rows)


def rotate_tokens(url: str, cipher: TokenCipher | None = None) -> int:
    """Re-encrypt every stored token under the first key, in one transaction; return how many.

    Any token no key decrypts fails the whole rotation (nothing changes), so an operator never drops
    a key that a token still needs.
    """
    cipher = cipher or token_cipher()
    with psycopg.connect(_psycopg_url(url)) as conn:
        rows = conn.execute(
            "SELECT connection_id, token_ciphertext FROM rutter.connections WHERE token_ciphertext IS NOT NULL "
            "ORDER BY connection_id FOR UPDATE"
        ).fetchall()
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE rutter.connections SET token_ciphertext = %s WHERE connection_id = %s",
                [(cipher.rotate(ciphertext, connection_id), connection_id) for connection_id, ciphertext in rows],
            )
    log.info("re-encrypted %d access tokens under the first key of %s", len(rows), KEY_ENV)
    return len(rows)
