-- A migration that fails half way: the first statement works, the second does not. Applied in
-- one transaction, neither is left behind (the tests check that `ledger_notes` does not exist).
CREATE TABLE ledger_notes (id bigserial PRIMARY KEY, note text);
ALTER TABLE no_such_table ADD COLUMN x int;
