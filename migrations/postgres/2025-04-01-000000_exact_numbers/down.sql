-- Back to jsonb. Every stored value converts (json that PostgreSQL accepted is valid jsonb
-- unless it holds \u0000, which the service refuses), but numbers become numerics again: a
-- -0.0 becomes 0, and the text is normalised (key order, spacing, duplicate keys).

ALTER TABLE study_data
    ALTER COLUMN outcome TYPE jsonb USING outcome::jsonb,
    ALTER COLUMN state TYPE jsonb USING state::jsonb,
    ALTER COLUMN context TYPE jsonb USING context::jsonb;

ALTER TABLE actions
    ALTER COLUMN state TYPE jsonb USING state::jsonb,
    ALTER COLUMN context TYPE jsonb USING context::jsonb;
