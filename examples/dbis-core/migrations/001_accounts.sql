-- Accounts of the core ledger: one row per account, balances in minor units.
CREATE TABLE accounts (
    id         bigserial PRIMARY KEY,
    owner      text      NOT NULL,
    balance    bigint    NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
