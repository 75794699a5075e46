-- Serialises the writes of one decision's key (user_id, decision_type, decision_idx): recording
-- the decision and recording its upload. Each takes a transaction-scoped advisory lock on the
-- key and only then reads the other table, in a query of its own. Under READ COMMITTED a
-- statement's snapshot is taken when it starts, before any lock it waits for; a query inside a
-- VOLATILE function takes a fresh one, so it sees what the lock's previous holder committed.
-- Whichever of the two writes commits second therefore sees the first, as if they had run one
-- after the other. Each write stays one statement (one round trip) that calls one of these.
--
-- Only functions: no table changes, so backups taken before this migration have the same
-- layout as those taken after it.

-- The lock of a key. The two-int form keeps these locks apart from the service's bigint-keyed
-- ones (the update lock, the migration lock); the first int, "just" in ASCII, names this use. Keys whose hashes
-- collide merely wait for each other. decision_type cannot hold '/' and decision_idx is
-- digits, so the text hashed tells keys apart.
CREATE FUNCTION justin_lock_decision_key(p_user_id TEXT, p_decision_type TEXT,
                                         p_decision_idx BIGINT)
RETURNS VOID LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(1786082164,
                                 hashtext(p_decision_type || '/' || p_decision_idx || '/' || p_user_id))
$$;

-- For recording a decision: locks the key, then says whether study data is stored for it.
CREATE FUNCTION justin_decision_key_uploaded(p_user_id TEXT, p_decision_type TEXT,
                                             p_decision_idx BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM justin_lock_decision_key(p_user_id, p_decision_type, p_decision_idx);
    RETURN EXISTS (
        SELECT 1 FROM study_data
        WHERE user_id = p_user_id AND decision_type = p_decision_type
          AND decision_idx = p_decision_idx);
END
$$;

-- For recording an upload: locks the key, then returns the decision logged for it (no row when
-- none is).
CREATE FUNCTION justin_decision_key_logged(p_user_id TEXT, p_decision_type TEXT,
                                           p_decision_idx BIGINT)
RETURNS TABLE (id BIGINT, action SMALLINT, action_prob DOUBLE PRECISION, available BOOLEAN)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM justin_lock_decision_key(p_user_id, p_decision_type, p_decision_idx);
    RETURN QUERY
        SELECT a.id, a.action, a.action_prob, a.available FROM actions a
        WHERE a.user_id = p_user_id AND a.decision_type = p_decision_type
          AND a.decision_idx = p_decision_idx;
END
$$;
