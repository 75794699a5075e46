-- The `timestamp` of a decision, an upload or an update request exactly as the study server
-- sent it, next to the instant it was read as (request_timestamp): the service reads several
-- ISO 8601 forms, with or without an offset, and keeps what it was given.
--
-- Appended last, in the order migrations/postgres appends them, so backups move between the
-- adapters. SQLite adds a NOT NULL column only with a default; the empty default is filled in
-- at once below and the service always writes the column, so rebuilding the three tables to
-- drop it is not worth it. Rows stored before this migration get the RFC 3339 form of their
-- stored time, which is the text this adapter stores request_timestamp as (UTC, six
-- fractional digits: 2025-01-01T12:00:00.000000Z), and the text migrations/postgres writes
-- for the same instant. The text they were sent as was not kept.

ALTER TABLE actions ADD COLUMN sent_timestamp TEXT NOT NULL DEFAULT '';
UPDATE actions SET sent_timestamp = request_timestamp;

ALTER TABLE study_data ADD COLUMN sent_timestamp TEXT NOT NULL DEFAULT '';
UPDATE study_data SET sent_timestamp = request_timestamp;

ALTER TABLE model_update_requests ADD COLUMN sent_timestamp TEXT NOT NULL DEFAULT '';
UPDATE model_update_requests SET sent_timestamp = request_timestamp;
