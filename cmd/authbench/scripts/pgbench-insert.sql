-- One append of one authd event per transaction, as a baseline of what raw
-- Postgres commits on this machine (run by bench/raw-insert.sh; pgbench runs
-- each statement of this file in its own implicit transaction).
-- The row has the shape of a LoginSucceeded event: a fresh stream per insert
-- (no version conflicts), ~200 bytes of metadata, ~200 bytes of data, and a
-- sealed part the size of a sealed 32-byte hash (12-byte nonce + 32 + 16-byte tag).
INSERT INTO events (id, stream_id, version, type, occurred_at, tenant_id, user_id, metadata, data, sealed, sealed_kid) VALUES (gen_random_uuid(), 'bench-' || gen_random_uuid(), 1, 'LoginSucceeded', now(), gen_random_uuid(), gen_random_uuid(), '{"ip": "203.0.113.42", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36", "request_id": "6f1c2a9e-3b7d-4e58-9a0c-1d2e3f4a5b6c"}', '{"email": "bench.user@example.com", "method": "password", "session_id": "0f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19", "device": "Chrome on Linux", "amr": ["pwd"], "tenant_name": "Bench Tenant", "new_device": false}', '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b', 'k1');
