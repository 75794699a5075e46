DROP TABLE model_update_requests;
DROP TABLE study_data;
DROP TABLE actions;
DROP TABLE model_parameters;
DROP TABLE users;
