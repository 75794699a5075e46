ALTER TABLE update_provenance DROP COLUMN last_correction_id;
DROP TABLE study_data_corrections;
