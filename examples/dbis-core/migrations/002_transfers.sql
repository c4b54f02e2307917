-- Transfers between accounts; the application writes one row per request.
CREATE TABLE transfers (
    id         bigserial PRIMARY KEY,
    from_id    bigint REFERENCES accounts (id),
    to_id      bigint REFERENCES accounts (id),
    amount     bigint NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transfers_created_at ON transfers (created_at);
