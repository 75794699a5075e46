-- Nothing to revert; see up.sql.
SELECT 1;
