DROP TRIGGER users_count_renamed;
DROP TRIGGER study_data_count_moved;
DROP TRIGGER study_data_count_delete;
DROP TRIGGER study_data_count_insert;
DROP TRIGGER actions_count_moved;
DROP TRIGGER actions_count_delete;
DROP TRIGGER actions_count_insert;
ALTER TABLE users DROP COLUMN uploads;
ALTER TABLE users DROP COLUMN decisions;
