"""The SQL stores' schema, as migrations: `MIGRATIONS[i]` takes a store from version i to i + 1.

A released entry never changes: a new schema is a new entry (and SCHEMA_VERSION follows).
`{name}` placeholders are filled by the store's `Dialect` (types, the schema prefix).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE {s}sagas (
            saga_id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
            state TEXT NOT NULL, status TEXT NOT NULL, data TEXT NOT NULL, error TEXT,
            revision {int} NOT NULL, created_at {ts} NOT NULL, updated_at {ts} NOT NULL,
            deadline_at {ts}, owner TEXT, lease_until {float}, abort_reason TEXT,
            waiting {bool} NOT NULL, wake_at {float}{n_column}){sagas_with}""",
        "CREATE INDEX sagas_newest ON {s}sagas (created_at DESC)",
        "CREATE INDEX sagas_by_name ON {s}sagas (name, created_at DESC)",
        "CREATE INDEX sagas_by_status ON {s}sagas (status, created_at)",  # claim, list
        """CREATE TABLE {s}transitions (
            saga_id TEXT NOT NULL, seq {int} NOT NULL, at {ts} NOT NULL, source TEXT,
            dest TEXT NOT NULL, event TEXT NOT NULL, step TEXT, attempt INTEGER, error TEXT,
            duration {float}, reason TEXT, worker TEXT, result TEXT,
            PRIMARY KEY (saga_id, seq)){clustered}""",
        """CREATE TABLE {s}outbox (
            id {serial} PRIMARY KEY, saga_id TEXT NOT NULL, message TEXT NOT NULL,
            created_at {ts} NOT NULL, sent_at {ts})""",
        "CREATE INDEX outbox_unsent ON {s}outbox (id) WHERE sent_at IS NULL",
        """CREATE TABLE {s}inbox (
            consumer TEXT NOT NULL, message_id TEXT NOT NULL, saga_id TEXT NOT NULL,
            consumed_at {ts} NOT NULL, PRIMARY KEY (consumer, message_id)){clustered}""",
        """CREATE TABLE {s}participants (
            participant TEXT NOT NULL, saga_key TEXT NOT NULL, state TEXT NOT NULL,
            updated_at {ts} NOT NULL, PRIMARY KEY (participant, saga_key))""",
        "CREATE TABLE {s}schema_version (version INTEGER NOT NULL)",
    ),
    (  # 2: fences, the outside-event queue, outbox claims (one relay per message)
        "ALTER TABLE {s}sagas ADD COLUMN fence {int} NOT NULL DEFAULT 1",
        """CREATE TABLE {s}events (
            seq {autoincrement}, saga_id TEXT NOT NULL, message_id TEXT NOT NULL,
            type TEXT NOT NULL, payload TEXT NOT NULL, received_at {ts} NOT NULL,
            UNIQUE (saga_id, message_id))""",
        "ALTER TABLE {s}outbox ADD COLUMN claimed_by TEXT",
        "ALTER TABLE {s}outbox ADD COLUMN claimed_until {float}",
    ),
    # 3: the operators' read queries (`_reads_sql`), keyset-paged on (created_at, n). Only
    # columns a step's commit never changes, so no cost per step (PostgreSQL keeps its HOT
    # updates). `{pg}` statements are PostgreSQL's alone (SQLite's indexes end with the
    # rowid already), `{sqlite}` ones SQLite's.
    (
        "{pg}CREATE INDEX sagas_keyset ON {s}sagas (created_at, n)",
        "{pg}CREATE INDEX sagas_status_keyset ON {s}sagas (status, created_at, n)",
        "{pg}CREATE INDEX sagas_definition_keyset ON {s}sagas (name, version, created_at, n)",
        "{sqlite}CREATE INDEX sagas_definition_keyset ON {s}sagas (name, version, created_at)",
        "{pg}CREATE INDEX sagas_id_prefix ON {s}sagas (saga_id text_pattern_ops)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
