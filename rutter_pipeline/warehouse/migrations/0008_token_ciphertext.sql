-- Access tokens at rest are Fernet ciphertext (rutter_pipeline/warehouse/tokens.py): a warehouse
-- dump alone must not reveal a token. This file cannot know the key (it lives in RUTTER_TOKEN_KEY,
-- outside the warehouse), so rows stored before it keep their clear text until
-- tokens.encrypt_clear_tokens moves it into token_ciphertext; migrate() runs that right after this
-- file, in every process that migrates (dev, the CLI, run workers, the webhook receiver).
-- The check is NOT VALID: it leaves those old rows be, but refuses any row written from now on
-- with a clear-text token, whoever writes it.
-- Never edit once applied.
-- depends: 0005_load_log

ALTER TABLE rutter.connections ADD COLUMN token_ciphertext text;
COMMENT ON COLUMN rutter.connections.access_token IS
    'clear-text tokens of rows from before 0008 only, emptied by the first migrate() with a key';
COMMENT ON COLUMN rutter.connections.token_ciphertext IS
    'the access token, Fernet-encrypted with RUTTER_TOKEN_KEY; NULL once the connection is removed';
ALTER TABLE rutter.connections ADD CONSTRAINT connections_no_clear_token CHECK (access_token IS NULL) NOT VALID;
