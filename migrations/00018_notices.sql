-- +goose Up
-- What the security-notice consumer (internal/notices) did about each event
-- of a type that may call for a notice, keyed by the event's id: the one row
-- every instance and every redelivery of the event meets, so a notice is
-- mailed at most once (README: "Security notices"). state is
--   sending   claimed by one sender until lease_until; its mail may be out
--   sent      the SMTP server accepted the mail
--   pending   a send failed for sure (the server refused it): may be claimed again
--   in_doubt  a sender lost track of a send (it died, or timed out waiting
--             for the server's answer): never sent again, only reported
--   skipped   no mail is due (a sign-in from a known device, a stale event,
--             an account that is gone)
CREATE TABLE notices_sent (
    event_id    uuid        PRIMARY KEY,
    event_type  text        NOT NULL,
    user_id     uuid        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('sending', 'sent', 'pending', 'in_doubt', 'skipped')),
    claim       uuid,
    lease_until timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Settled notices are forgotten once their events are too old to be mailed
-- anyway (notices.Consumer.Sweep).
CREATE INDEX notices_sent_settled ON notices_sent (updated_at) WHERE state IN ('sent', 'skipped', 'in_doubt');

-- The devices and networks (a /24 of IPv4, a /64 of IPv6) each account
-- signed in from, as the notice consumer saw their SessionStarted events:
-- the first and the last sign-in of each pair, by the events' own times, so
-- that the decision does not depend on the order instances handle them in.
CREATE TABLE notice_devices (
    user_id          uuid        NOT NULL,
    device           text        NOT NULL,
    network          text        NOT NULL,
    first_sign_in_at timestamptz NOT NULL,
    last_sign_in_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, device, network)
);

-- +goose Down
DROP TABLE notice_devices;
DROP TABLE notices_sent;
