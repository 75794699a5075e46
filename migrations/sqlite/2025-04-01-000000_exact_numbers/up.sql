-- Exact numbers: nothing to change in SQLite, which keeps JSON as the text the service wrote
-- (the shortest text that reads back as the same double) and so already returns every finite
-- double bit for bit. The migration exists so that both adapters have the same migrations:
-- a backup names the migrations of the database it was taken from, and moves between the
-- adapters only when they agree (migrations/postgres changes the columns' type here).
SELECT 1;
