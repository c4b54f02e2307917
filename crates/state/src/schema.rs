//! The versioned schema. Each migration runs once, in order, inside the transaction that records
//! it in `schema_version`, so a crash mid-migration leaves the previous version intact.

use crate::db::Dialect;

/// One schema version.
pub(crate) struct Migration {
    pub(crate) version: u32,
    /// DDL in the PostgreSQL dialect, with `{intent_id}` standing for the one column type the two
    /// dialects spell differently.
    pub(crate) ddl: &'static str,
}

impl Migration {
    pub(crate) fn ddl_for(&self, dialect: Dialect) -> String {
        let intent_id = match dialect {
            // AUTOINCREMENT: ids are never reused, even after the newest intent is deleted.
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Dialect::Postgres => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        };
        self.ddl.replace("{intent_id}", intent_id)
    }
}

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Every column is BIGINT or TEXT (times are Unix milliseconds) so that both backends read and
/// write the same values through one code path.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        ddl: r#"
CREATE TABLE fleets (
    name            TEXT PRIMARY KEY,
    -- Counters live here, not in max(number), so numbers are never reused.
    last_revision   BIGINT NOT NULL DEFAULT 0,
    last_lock_token BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE revisions (
    fleet          TEXT NOT NULL REFERENCES fleets (name),
    number         BIGINT NOT NULL,
    spec_json      TEXT NOT NULL,
    placement_json TEXT NOT NULL,
    plan_hash      TEXT NOT NULL,
    actor          TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    outcome        TEXT NOT NULL,
    outcome_reason TEXT,
    rolled_back_to BIGINT,
    finished_at_ms BIGINT,
    PRIMARY KEY (fleet, number)
);

CREATE TABLE instances (
    fleet         TEXT NOT NULL REFERENCES fleets (name),
    unit          TEXT NOT NULL,
    service       TEXT NOT NULL,
    instance      TEXT NOT NULL,
    revision      BIGINT NOT NULL,
    site          TEXT NOT NULL,
    host          TEXT NOT NULL,
    desired       TEXT NOT NULL,
    observed      TEXT NOT NULL,
    handle_json   TEXT NOT NULL,
    ports_json    TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (fleet, unit)
);

CREATE TABLE intents (
    id             {intent_id},
    fleet          TEXT NOT NULL REFERENCES fleets (name),
    op             TEXT NOT NULL,
    unit           TEXT NOT NULL,
    revision       BIGINT NOT NULL,
    detail_json    TEXT NOT NULL,
    lease_token    BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    outcome        TEXT,
    failure_reason TEXT,
    closed_at_ms   BIGINT
);

-- Recovery asks for open intents on every apply; keep that cheap however long the history.
CREATE INDEX intents_open ON intents (fleet, id) WHERE outcome IS NULL;

CREATE TABLE deploy_locks (
    fleet          TEXT PRIMARY KEY REFERENCES fleets (name),
    token          BIGINT NOT NULL,
    who            TEXT NOT NULL,
    pid            BIGINT NOT NULL,
    operation      TEXT NOT NULL,
    acquired_at_ms BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);

CREATE TABLE audit_anchor (
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    seq           BIGINT NOT NULL,
    head_hash     TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        ddl: r#"
-- Which provider endpoint runs the unit (e.g. `local://host/abs/state/dir`): with a state store
-- shared by several operators, a unit that this phoenix cannot observe is known to run
-- elsewhere and is never started a second time. Rows written before version 2 have ''.
ALTER TABLE instances ADD COLUMN endpoint TEXT NOT NULL DEFAULT '';

-- Each fleet's audit chain lives here, so that every operator sharing the store sees and
-- verifies one history. `record_json` is the whole record as hashed and signed; the other
-- columns repeat what queries need.
CREATE TABLE audit_records (
    fleet         TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL,
    signer        TEXT,
    record_json   TEXT NOT NULL,
    stored_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (fleet, seq)
);

-- The public keys allowed to sign a fleet's chain, each added and removed by a signed record of
-- that chain (`allowed_seq`, `revoked_seq`), so verification can tell a key written here by hand.
CREATE TABLE audit_keys (
    fleet        TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    name         TEXT NOT NULL,
    allowed_seq  BIGINT NOT NULL,
    revoked_seq  BIGINT,
    PRIMARY KEY (fleet, public_key)
);

-- Per-fleet anchors of the chains above (the version 1 `audit_anchor` is the anchor of the old
-- `audit.jsonl` file, kept to check that file when it is imported).
CREATE TABLE audit_anchors (
    fleet         TEXT PRIMARY KEY,
    seq           BIGINT NOT NULL,
    head_hash     TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 3,
        ddl: r#"
-- API tokens of `phoenix serve` (`phoenix serve token create|list|revoke`). Only the SHA-256 of
-- each token's secret is kept, so a copy of the store does not give anyone a working token. A
-- revoked token keeps its row (`revoked_at_ms`), so the list says when it stopped working.
CREATE TABLE api_tokens (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT
);

-- Every authenticated request looks its token up by hash.
CREATE UNIQUE INDEX api_tokens_by_secret ON api_tokens (secret_sha256);
"#,
    },
    Migration {
        version: 4,
        ddl: r#"
-- Runs of one-shot jobs (`jobs:`), one row per job instance and revision: the fingerprint of
-- what ran (the engine runs a job again only when it changes), how it ended, after how many
-- attempts, and the tail of its output, kept after its unit is gone.
CREATE TABLE job_runs (
    fleet          TEXT NOT NULL,
    instance       TEXT NOT NULL,
    revision       BIGINT NOT NULL,
    job            TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    exit_code      BIGINT,
    attempts       BIGINT NOT NULL,
    duration_ms    BIGINT NOT NULL,
    detail         TEXT NOT NULL,
    output         TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    PRIMARY KEY (fleet, instance, revision)
);
"#,
    },
    Migration {
        version: 5,
        ddl: r#"
-- Secrets (`secrets:` in the spec), one row per fleet and name: the value sealed with the
-- operator's secrets key (XChaCha20-Poly1305, `crate::secrets`; the key is never stored here),
-- and a version counter that unit fingerprints carry instead of anything derived from the value.
CREATE TABLE secrets (
    fleet         TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    source        TEXT NOT NULL,
    sealed        TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (fleet, name)
);
"#,
    },
    Migration {
        version: 6,
        ddl: r#"
-- Earlier values of each secret, kept so that a rollback (or `phoenix rollback`) starts an older
-- revision's units with the value that revision ran with: unit specs pin a secret's version,
-- and a version is looked up here when it is not the current one. Sealed like the current value
-- (same key, same associated data); the newest `secrets::KEPT_VERSIONS` per secret are kept.
CREATE TABLE secret_versions (
    fleet         TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    source        TEXT NOT NULL,
    sealed        TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (fleet, name, version)
);
"#,
    },
    Migration {
        version: 7,
        ddl: r#"
-- A counter of each fleet's writes to its revisions and instances, bumped in the transaction
-- that makes them: a reader that keeps a view of the fleet (`phoenix serve`) reads this one
-- row to know whether its view still matches the store, instead of reading every instance.
ALTER TABLE fleets ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
"#,
    },
];
