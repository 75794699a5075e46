//! Diesel's view of the tables created by `migrations/`. Kept by hand, column for column in the
//! migration's order: the backup checks that the columns it exports through these definitions
//! are exactly the columns the database has, so a drift shows up as a failed backup rather than
//! a silently incomplete one.

diesel::table! {
    /// Registered participants.
    users (id) {
        /// Surrogate key.
        id -> Int8,
        /// The participant id the study server uses.
        user_id -> Text,
        /// When the participant was registered.
        created_at -> Timestamptz,
        /// When their time in the study starts (open when NULL).
        study_start -> Nullable<Timestamptz>,
        /// `study_start` as the study server sent it.
        study_start_sent -> Nullable<Text>,
        /// When their time in the study ends (open when NULL).
        study_end -> Nullable<Timestamptz>,
        /// `study_end` as the study server sent it.
        study_end_sent -> Nullable<Text>,
        /// When they withdrew.
        withdrawn_at -> Nullable<Timestamptz>,
        /// Why they withdrew, as sent.
        withdrawal_reason -> Nullable<Text>,
        /// When they were erased (`user_id` is then their pseudonym).
        erased_at -> Nullable<Timestamptz>,
        /// Their decisions: the rows of `actions` with their `user_id`, kept by triggers
        /// (migration 2026-12-05); derived, so backups leave it out.
        decisions -> Int8,
        /// Their uploads: the rows of `study_data` with their `user_id`, kept the same way.
        uploads -> Int8,
    }
}

diesel::table! {
    /// Every version of the model parameters.
    model_parameters (version) {
        /// 1, 2, 3, ... with no gaps.
        version -> Int8,
        /// The algorithm the parameters belong to.
        algorithm -> Text,
        /// The parameters in the algorithm's JSON shape.
        parameters -> Jsonb,
        /// When the version was stored.
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// One row per decision.
    actions (id) {
        /// Surrogate key.
        id -> Int8,
        /// The participant.
        user_id -> Text,
        /// The participant's decision time.
        decision_idx -> Int8,
        /// The study server's timestamp.
        request_timestamp -> Timestamptz,
        /// When the service decided.
        created_at -> Timestamptz,
        /// The context as sent (`json`, which keeps the text, so numbers come back bit for bit).
        context -> Json,
        /// The algorithm's state (`json`).
        state -> Json,
        /// 0 or 1.
        action -> Int2,
        /// Probability of action 1.
        action_prob -> Float8,
        /// The parameter version used.
        parameter_version -> Int8,
        /// The decision generator's seed, a `u64` stored bit for bit.
        rng_seed -> Int8,
        /// The kind of decision; the key is (user, type, index).
        decision_type -> Text,
        /// Whether the participant was randomized (false: action 0, probability 0, no draw).
        available -> Bool,
        /// The study server's reason for unavailability, if it gave one.
        unavailable_reason -> Nullable<Text>,
        /// The study server's timestamp exactly as sent.
        sent_timestamp -> Text,
        /// `algorithm`, `warmup`, `fallback` or `host`.
        policy -> Text,
        /// The algorithm's failure, for a fallback decision.
        fallback_reason -> Nullable<Text>,
        /// Who decided, for a host decision.
        decided_by -> Nullable<Text>,
        /// Whether the participant was in the study at the decision's time.
        in_study -> Bool,
    }
}

diesel::table! {
    /// Uploaded study data, one row per decision.
    study_data (id) {
        /// Surrogate key; its order is the upload order.
        id -> Int8,
        /// The participant.
        user_id -> Text,
        /// The participant's decision time.
        decision_idx -> Int8,
        /// The study server's timestamp.
        request_timestamp -> Timestamptz,
        /// When the upload was received.
        created_at -> Timestamptz,
        /// The context at decision time (`json`).
        context -> Json,
        /// 0 or 1.
        action -> Int2,
        /// Probability of action 1.
        action_prob -> Float8,
        /// The state (`json`).
        state -> Json,
        /// The outcome (`json`).
        outcome -> Json,
        /// The derived reward.
        reward -> Float8,
        /// Whether a decision was logged for the key (and, when it was, matched the upload).
        action_logged -> Bool,
        /// The kind of decision; the key is (user, type, index).
        decision_type -> Text,
        /// The logged decision's availability (true when none was logged).
        available -> Bool,
        /// The study server's timestamp exactly as sent.
        sent_timestamp -> Text,
        /// The logged decision's policy (NULL when none was logged).
        policy -> Nullable<Text>,
    }
}

diesel::table! {
    /// Model update requests and how they ended.
    model_update_requests (id) {
        /// The id given to the client.
        id -> Uuid,
        /// The study server's timestamp.
        request_timestamp -> Timestamptz,
        /// When the request was received.
        created_at -> Timestamptz,
        /// Where the outcome is POSTed.
        callback_url -> Text,
        /// `processing`, `completed` or `failed`.
        status -> Text,
        /// When it finished.
        finished_at -> Nullable<Timestamptz>,
        /// Why it failed.
        error -> Nullable<Text>,
        /// The version it produced.
        parameter_version -> Nullable<Int8>,
        /// How many times a worker has claimed it.
        attempts -> Int4,
        /// When a worker last claimed it.
        started_at -> Nullable<Timestamptz>,
        /// `pending`, `delivered` or `failed`.
        callback_status -> Text,
        /// Callback POSTs tried.
        callback_attempts -> Int4,
        /// The last callback attempt's error.
        callback_error -> Nullable<Text>,
        /// When callback delivery ended.
        callback_finished_at -> Nullable<Timestamptz>,
        /// The study server's timestamp exactly as sent.
        sent_timestamp -> Text,
    }
}

diesel::table! {
    /// What each completed update's parameters were computed from.
    update_provenance (update_id) {
        /// The update request.
        update_id -> Uuid,
        /// The version it produced.
        parameter_version -> Int8,
        /// The service's version.
        service_version -> Text,
        /// The algorithm's name.
        algorithm -> Text,
        /// SHA-256 of the effective configuration, hex.
        config_hash -> Text,
        /// Study records read.
        rows_read -> Int8,
        /// The backup taken before the update.
        backup_file -> Nullable<Text>,
        /// When the update completed.
        created_at -> Timestamptz,
        /// The largest `study_data` id the update's job could read (0: none).
        last_study_data_id -> Int8,
        /// The policies whose decisions the update learned from, comma-separated.
        included_policies -> Text,
        /// The newest decision its job could read, when it imputed rewards.
        last_action_id -> Nullable<Int8>,
        /// Decisions made at or before this without an upload were learned from with
        /// `default_reward` (NULL: missing outcomes were left out).
        imputed_decided_by -> Nullable<Timestamptz>,
        /// The reward those decisions were learned from with.
        default_reward -> Nullable<Float8>,
        /// How many records it imputed.
        imputed_rows -> Nullable<Int8>,
        /// The largest correction id the update's job could read (NULL: before corrections).
        last_correction_id -> Nullable<Int8>,
    }
}

diesel::table! {
    /// Each participant's history: enrollment, changes of their window, withdrawal.
    participant_events (id) {
        /// Surrogate key; its order is the order of events.
        id -> Int8,
        /// The participant.
        user_id -> Text,
        /// `enrolled`, `enrollment_changed` or `withdrawn`.
        kind -> Text,
        /// When the service recorded the event.
        recorded_at -> Timestamptz,
        /// The window's start after the event.
        study_start -> Nullable<Timestamptz>,
        /// The start as sent.
        study_start_sent -> Nullable<Text>,
        /// The window's end after the event.
        study_end -> Nullable<Timestamptz>,
        /// The end as sent.
        study_end_sent -> Nullable<Text>,
        /// A withdrawal's reason.
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    /// The audit record of each erasure (no participant id).
    erasures (id) {
        /// The erasure's id.
        id -> Uuid,
        /// When it happened.
        erased_at -> Timestamptz,
        /// The erased `users` row's id.
        participant_number -> Int8,
        /// The id that replaced the participant's.
        pseudonym -> Text,
        /// `[[table, rows], ...]`: rows deleted or emptied per table.
        row_counts -> Json,
        /// The backup taken just before.
        backup_file -> Text,
    }
}

diesel::joinable!(actions -> model_parameters (parameter_version));
diesel::joinable!(model_update_requests -> model_parameters (parameter_version));
diesel::joinable!(update_provenance -> model_update_requests (update_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    model_parameters,
    actions,
    study_data,
    model_update_requests,
    update_provenance,
    participant_events,
    erasures,
);

diesel::table! {
    /// Corrections of uploads: each linked to the `study_data` row it corrects, which is kept.
    study_data_corrections (id) {
        /// Surrogate key; its order is the order corrections were stored.
        id -> Int8,
        /// The `study_data` row corrected.
        study_data_id -> Int8,
        /// The participant.
        user_id -> Text,
        /// The kind of decision.
        decision_type -> Text,
        /// The participant's decision time.
        decision_idx -> Int8,
        /// The study server's timestamp.
        request_timestamp -> Timestamptz,
        /// That timestamp as sent.
        sent_timestamp -> Text,
        /// When the correction was received.
        created_at -> Timestamptz,
        /// The corrected context (`json`).
        context -> Json,
        /// The corrected state (`json`).
        state -> Json,
        /// The corrected outcome (`json`).
        outcome -> Json,
        /// The reward derived from the corrected outcome.
        reward -> Float8,
    }
}
