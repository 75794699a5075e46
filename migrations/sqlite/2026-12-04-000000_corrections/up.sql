-- Corrections of uploads, as migrations/postgres creates them, in SQLite's terms (times are
-- RFC 3339 TEXT with six fractional digits, JSON is TEXT). See the PostgreSQL migration.
CREATE TABLE study_data_corrections (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    study_data_id     INTEGER NOT NULL REFERENCES study_data (id) ON DELETE CASCADE,
    user_id           TEXT    NOT NULL,
    decision_type     TEXT    NOT NULL,
    decision_idx      INTEGER NOT NULL,
    request_timestamp TEXT    NOT NULL,
    sent_timestamp    TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    context           TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    outcome           TEXT    NOT NULL,
    reward            REAL    NOT NULL
);
CREATE INDEX study_data_corrections_original_idx ON study_data_corrections (study_data_id, id);

ALTER TABLE update_provenance ADD COLUMN last_correction_id INTEGER;
