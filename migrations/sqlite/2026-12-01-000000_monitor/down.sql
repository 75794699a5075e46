DROP TABLE monitor_alerts;
DROP TABLE monitor_state;
DROP TABLE upload_refusals;
