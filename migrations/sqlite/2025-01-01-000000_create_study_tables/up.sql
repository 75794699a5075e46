-- The study's tables, as migrations/postgres creates them, in SQLite's terms. Column names and
-- order are the same as PostgreSQL's, so backups move between the two adapters. SQLite has no
-- timestamp, JSON, UUID or boolean types:
--   * times are TEXT in RFC 3339, UTC, always with six fractional digits
--     ("2025-01-01T12:00:00.123456Z"), so that text order is time order;
--   * JSON values are TEXT holding one JSON document;
--   * UUIDs are TEXT, lower-case and hyphenated;
--   * booleans are INTEGER 0 or 1.
-- Identity ids are INTEGER PRIMARY KEY AUTOINCREMENT: AUTOINCREMENT (unlike a bare rowid) never
-- hands out an id again, so "upload order is id order" survives deletes.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT    NOT NULL UNIQUE CHECK (length(user_id) BETWEEN 1 AND 255),
    created_at  TEXT    NOT NULL
);

CREATE TABLE model_parameters (
    version     INTEGER PRIMARY KEY CHECK (version >= 1),
    algorithm   TEXT    NOT NULL,
    parameters  TEXT    NOT NULL CHECK (json_valid(parameters)),
    created_at  TEXT    NOT NULL
);

-- One row per randomized decision, with what is needed to replay its draw.
CREATE TABLE actions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           TEXT    NOT NULL REFERENCES users (user_id),
    decision_idx      INTEGER NOT NULL CHECK (decision_idx >= 0),
    request_timestamp TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    context           TEXT    NOT NULL CHECK (json_valid(context)),
    state             TEXT    NOT NULL CHECK (json_valid(state)),
    action            INTEGER NOT NULL CHECK (action IN (0, 1)),
    action_prob       REAL    NOT NULL CHECK (action_prob >= 0 AND action_prob <= 1),
    parameter_version INTEGER NOT NULL REFERENCES model_parameters (version),
    rng_seed          INTEGER NOT NULL,
    CONSTRAINT actions_user_decision_key UNIQUE (user_id, decision_idx)
);

-- What happened after each decision, as uploaded by the study server.
CREATE TABLE study_data (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           TEXT    NOT NULL REFERENCES users (user_id),
    decision_idx      INTEGER NOT NULL CHECK (decision_idx >= 0),
    request_timestamp TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    context           TEXT    NOT NULL CHECK (json_valid(context)),
    action            INTEGER NOT NULL CHECK (action IN (0, 1)),
    action_prob       REAL    NOT NULL CHECK (action_prob >= 0 AND action_prob <= 1),
    state             TEXT    NOT NULL CHECK (json_valid(state)),
    outcome           TEXT    NOT NULL CHECK (json_valid(outcome)),
    reward            REAL    NOT NULL,
    CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_idx)
);

CREATE TABLE model_update_requests (
    id                TEXT    PRIMARY KEY NOT NULL,
    request_timestamp TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    callback_url      TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    finished_at       TEXT,
    error             TEXT,
    parameter_version INTEGER REFERENCES model_parameters (version)
);

-- The unique constraints above index (user_id, decision_idx) for the request paths; these
-- serve the foreign keys and the status listing.
CREATE INDEX actions_parameter_version_idx ON actions (parameter_version);
CREATE INDEX model_update_requests_status_idx ON model_update_requests (status, created_at);
