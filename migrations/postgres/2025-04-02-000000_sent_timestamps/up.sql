-- The `timestamp` of a decision, an upload or an update request exactly as the study server
-- sent it, next to the instant it was read as (request_timestamp): the service reads several
-- ISO 8601 forms, with or without an offset, and keeps what it was given.
--
-- Appended last, in the order migrations/sqlite appends them, so backups move between the
-- adapters. Rows stored before this migration get the RFC 3339 form of their stored time, in
-- UTC with six fractional digits (2025-01-01T12:00:00.000000Z): the text they were sent as was
-- not kept. migrations/sqlite writes the same text for the same instant.

ALTER TABLE actions ADD COLUMN sent_timestamp TEXT;
UPDATE actions
SET sent_timestamp = to_char(request_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
ALTER TABLE actions ALTER COLUMN sent_timestamp SET NOT NULL;

ALTER TABLE study_data ADD COLUMN sent_timestamp TEXT;
UPDATE study_data
SET sent_timestamp = to_char(request_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
ALTER TABLE study_data ALTER COLUMN sent_timestamp SET NOT NULL;

ALTER TABLE model_update_requests ADD COLUMN sent_timestamp TEXT;
UPDATE model_update_requests
SET sent_timestamp = to_char(request_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
ALTER TABLE model_update_requests ALTER COLUMN sent_timestamp SET NOT NULL;
