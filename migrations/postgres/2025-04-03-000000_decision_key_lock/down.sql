DROP FUNCTION justin_decision_key_logged(TEXT, TEXT, BIGINT);
DROP FUNCTION justin_decision_key_uploaded(TEXT, TEXT, BIGINT);
DROP FUNCTION justin_lock_decision_key(TEXT, TEXT, BIGINT);
