-- +goose Up
-- Crypto-shredding (DESIGN rule 11). Each user has a data key, kept sealed
-- under the master key; the personal fields of the user's events (metadata
-- ip and user_agent, data fields tagged personal) are sealed with it in
-- events.personal. Erasure sets sealed_key to NULL and erased_at: every copy
-- of those fields in the log, and in any backup of it, can no longer be read.
CREATE TABLE user_keys (
    user_id    uuid PRIMARY KEY,
    kid        text,
    sealed_key bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    erased_at  timestamptz,
    CHECK ((sealed_key IS NULL) = (erased_at IS NOT NULL))
);

-- AES-256-GCM under the user's data key, with the event id as associated data.
ALTER TABLE events ADD COLUMN personal bytea;

-- The JetStream sequence of every published event of a user, written by the
-- relay with its checkpoint, so that an erasure can delete the user's
-- messages from the stream without reading the stream.
CREATE TABLE stream_messages (
    user_id uuid   NOT NULL,
    seq     bigint NOT NULL,
    PRIMARY KEY (user_id, seq)
);

-- The stream sequence of the relay's checkpoint event: after a crash between
-- publish and checkpoint, the relay reads the stream from here to record what
-- it published meanwhile; an erasure deletes only messages before it, so the
-- stream's newest messages, from which the relay continues, are never gone.
ALTER TABLE relay_checkpoint ADD COLUMN stream_seq bigint NOT NULL DEFAULT 0;

-- Users whose stream messages are still to be deleted. tx_id is the erasing
-- transaction: the relay must have published all of it first.
CREATE TABLE stream_erasures (
    user_id      uuid PRIMARY KEY,
    tx_id        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE stream_erasures;
ALTER TABLE relay_checkpoint DROP COLUMN stream_seq;
DROP TABLE stream_messages;
ALTER TABLE events DROP COLUMN personal;
DROP TABLE user_keys;
