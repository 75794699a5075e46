-- The texts as sent are dropped; request_timestamp keeps the instant each named.
ALTER TABLE model_update_requests DROP COLUMN sent_timestamp;
ALTER TABLE study_data DROP COLUMN sent_timestamp;
ALTER TABLE actions DROP COLUMN sent_timestamp;
