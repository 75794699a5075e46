-- The dashboard's rollup: figures per day derived from actions and study_data, brought up to
-- date by the dashboard's pages (justin_core::dashboard::refresh), never by /action or
-- /upload_data. Derived data: not in backups; a reset or restore empties it with the study's
-- tables and the next page builds it again.

-- Where the refresh stands (one row): a JSON object with the settings it was built under, the
-- number of erasures, the largest decision and upload ids read and the ids still missing
-- below them.
CREATE TABLE dashboard_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);

-- Decisions per calendar day (YYYY-MM-DD in the schedule's zone), type and parameter version.
CREATE TABLE dashboard_decision_days (
    day TEXT NOT NULL,
    decision_type TEXT NOT NULL,
    parameter_version INTEGER NOT NULL,
    decisions INTEGER NOT NULL,
    available INTEGER NOT NULL,
    at_lower INTEGER NOT NULL,
    at_upper INTEGER NOT NULL,
    q1 REAL,
    q2 REAL,
    q3 REAL,
    min_id INTEGER NOT NULL,
    max_id INTEGER NOT NULL,
    PRIMARY KEY (day, decision_type, parameter_version)
);

-- Uploads per calendar day (of the decision time they name) and type.
CREATE TABLE dashboard_upload_days (
    day TEXT NOT NULL,
    decision_type TEXT NOT NULL,
    uploads INTEGER NOT NULL,
    reward_sum REAL NOT NULL,
    min_id INTEGER NOT NULL,
    max_id INTEGER NOT NULL,
    PRIMARY KEY (day, decision_type)
);

-- Each participant's latest decision time and latest upload's arrival.
CREATE TABLE dashboard_participants (
    user_id TEXT PRIMARY KEY,
    last_decision TEXT,
    last_upload TEXT
);
