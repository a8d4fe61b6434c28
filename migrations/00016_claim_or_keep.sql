-- +goose Up
-- Claims a write-side unique key for owner, or, when the command found owner
-- holding it already (p_held), makes sure owner still does and keeps it so
-- until the transaction ends (a release waits for it). One statement either
-- way: a signup for a new address and one for a taken address run the same
-- statements, so their timing says nothing about the address.
-- A new claim of a key another owner holds fails as the plain INSERT did
-- (23505 on unique_keys_pkey); a held one that owner no longer holds fails as
-- a stale decision (AU409), for the command to decide again.
-- +goose StatementBegin
CREATE FUNCTION eventstore_claim(p_scope text, p_key text, p_owner text, p_held boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_held THEN
        PERFORM 1 FROM unique_keys WHERE scope = p_scope AND key = p_key AND owner = p_owner FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unique key %/% is no longer held by %', p_scope, p_key, p_owner
                USING ERRCODE = 'AU409';
        END IF;
    ELSE
        INSERT INTO unique_keys (scope, key, owner) VALUES (p_scope, p_key, p_owner);
    END IF;
    RETURN true;
END $$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION eventstore_claim;
