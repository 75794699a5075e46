-- The study's tables. Every time is a timestamptz (stored in UTC); every JSON value is JSONB.

CREATE TABLE users (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     TEXT        NOT NULL UNIQUE CHECK (length(user_id) BETWEEN 1 AND 255),
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE model_parameters (
    version     BIGINT      PRIMARY KEY CHECK (version >= 1),
    algorithm   TEXT        NOT NULL,
    parameters  JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- One row per randomized decision, with what is needed to replay its draw.
CREATE TABLE actions (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           TEXT             NOT NULL REFERENCES users (user_id),
    decision_idx      BIGINT           NOT NULL CHECK (decision_idx >= 0),
    request_timestamp TIMESTAMPTZ      NOT NULL,
    created_at        TIMESTAMPTZ      NOT NULL,
    context           JSONB            NOT NULL,
    state             JSONB            NOT NULL,
    action            SMALLINT         NOT NULL CHECK (action IN (0, 1)),
    action_prob       DOUBLE PRECISION NOT NULL CHECK (action_prob >= 0 AND action_prob <= 1),
    parameter_version BIGINT           NOT NULL REFERENCES model_parameters (version),
    rng_seed          BIGINT           NOT NULL,
    CONSTRAINT actions_user_decision_key UNIQUE (user_id, decision_idx)
);

-- What happened after each decision, as uploaded by the study server.
CREATE TABLE study_data (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           TEXT             NOT NULL REFERENCES users (user_id),
    decision_idx      BIGINT           NOT NULL CHECK (decision_idx >= 0),
    request_timestamp TIMESTAMPTZ      NOT NULL,
    created_at        TIMESTAMPTZ      NOT NULL,
    context           JSONB            NOT NULL,
    action            SMALLINT         NOT NULL CHECK (action IN (0, 1)),
    action_prob       DOUBLE PRECISION NOT NULL CHECK (action_prob >= 0 AND action_prob <= 1),
    state             JSONB            NOT NULL,
    outcome           JSONB            NOT NULL,
    reward            DOUBLE PRECISION NOT NULL,
    CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_idx)
);

CREATE TABLE model_update_requests (
    id                UUID        PRIMARY KEY,
    request_timestamp TIMESTAMPTZ NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    callback_url      TEXT        NOT NULL,
    status            TEXT        NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    finished_at       TIMESTAMPTZ,
    error             TEXT,
    parameter_version BIGINT      REFERENCES model_parameters (version)
);

-- The unique constraints above index (user_id, decision_idx) for the request paths; these
-- serve the foreign keys and the status listing.
CREATE INDEX actions_parameter_version_idx ON actions (parameter_version);
CREATE INDEX model_update_requests_status_idx ON model_update_requests (status, created_at);
