DROP TABLE dashboard_participants;
DROP TABLE dashboard_upload_days;
DROP TABLE dashboard_decision_days;
DROP TABLE dashboard_state;
