//! Diesel's view of the tables created by `migrations/sqlite/`. Kept by hand, column for column
//! in the migrations' order, which is also PostgreSQL's order: backups list columns in this
//! order and the other adapter checks them against its own tables.
//!
//! SQLite has no time, JSON or UUID types, so those columns are `Text` here and converted in
//! [`crate::models`] (see the migration for the stored formats).

diesel::table! {
    /// Registered participants.
    users (id) {
        /// Surrogate key.
        id -> BigInt,
        /// The participant id the study server uses.
        user_id -> Text,
        /// When the participant was registered.
        created_at -> Text,
        /// When their time in the study starts (none: from registration on).
        study_start -> Nullable<Text>,
        /// `study_start` exactly as sent.
        study_start_sent -> Nullable<Text>,
        /// When their time in the study ends (none: open-ended).
        study_end -> Nullable<Text>,
        /// `study_end` exactly as sent.
        study_end_sent -> Nullable<Text>,
        /// When they withdrew.
        withdrawn_at -> Nullable<Text>,
        /// The study server's reason for the withdrawal.
        withdrawal_reason -> Nullable<Text>,
        /// When they were erased (the row then holds a pseudonym).
        erased_at -> Nullable<Text>,
        /// Their decisions: the rows of `actions` with their `user_id`, kept by triggers
        /// (migration 2026-12-05); derived, so backups leave it out.
        decisions -> BigInt,
        /// Their uploads: the rows of `study_data` with their `user_id`, kept the same way.
        uploads -> BigInt,
    }
}

diesel::table! {
    /// Every version of the model parameters.
    model_parameters (version) {
        /// 1, 2, 3, ... with no gaps.
        version -> BigInt,
        /// The algorithm the parameters belong to.
        algorithm -> Text,
        /// The parameters in the algorithm's JSON shape.
        parameters -> Text,
        /// When the version was stored.
        created_at -> Text,
    }
}

diesel::table! {
    /// One row per decision, randomized or not.
    actions (id) {
        /// Surrogate key.
        id -> BigInt,
        /// The participant.
        user_id -> Text,
        /// The participant's decision time.
        decision_idx -> BigInt,
        /// The study server's timestamp.
        request_timestamp -> Text,
        /// When the service decided.
        created_at -> Text,
        /// The context as sent.
        context -> Text,
        /// The algorithm's state.
        state -> Text,
        /// 0 or 1.
        action -> SmallInt,
        /// Probability of action 1.
        action_prob -> Double,
        /// The parameter version used.
        parameter_version -> BigInt,
        /// The decision generator's seed, a `u64` stored bit for bit.
        rng_seed -> BigInt,
        /// The kind of decision; indexes count separately per type.
        decision_type -> Text,
        /// Whether the participant was randomized (if not: action 0, probability 0).
        available -> Bool,
        /// The study server's reason for unavailability, if it gave one.
        unavailable_reason -> Nullable<Text>,
        /// The study server's timestamp exactly as sent.
        sent_timestamp -> Text,
        /// `algorithm`, `warmup`, `fallback` or `host`.
        policy -> Text,
        /// The algorithm's failure, for a fallback decision.
        fallback_reason -> Nullable<Text>,
        /// Who decided, for a decision the study server made.
        decided_by -> Nullable<Text>,
        /// Whether the participant was in the study at the decision's time.
        in_study -> Bool,
    }
}

diesel::table! {
    /// Uploaded study data, one row per decision.
    study_data (id) {
        /// Surrogate key; its order is the upload order.
        id -> BigInt,
        /// The participant.
        user_id -> Text,
        /// The participant's decision time.
        decision_idx -> BigInt,
        /// The study server's timestamp.
        request_timestamp -> Text,
        /// When the upload was received.
        created_at -> Text,
        /// The context at decision time.
        context -> Text,
        /// 0 or 1.
        action -> SmallInt,
        /// Probability of action 1.
        action_prob -> Double,
        /// The state.
        state -> Text,
        /// The outcome.
        outcome -> Text,
        /// The derived reward.
        reward -> Double,
        /// Whether a decision was logged for the key (and, when it was, matched the upload).
        action_logged -> Bool,
        /// The kind of decision.
        decision_type -> Text,
        /// The logged decision's availability (true when none was logged); unavailable rows
        /// never reach an update.
        available -> Bool,
        /// The study server's timestamp exactly as sent.
        sent_timestamp -> Text,
        /// The logged decision's policy (none when no decision is logged).
        policy -> Nullable<Text>,
    }
}

diesel::table! {
    /// Model update requests and how they ended.
    model_update_requests (id) {
        /// The id given to the client.
        id -> Text,
        /// The study server's timestamp.
        request_timestamp -> Text,
        /// When the request was received.
        created_at -> Text,
        /// Where the outcome is POSTed.
        callback_url -> Text,
        /// `processing`, `completed` or `failed`.
        status -> Text,
        /// When it finished.
        finished_at -> Nullable<Text>,
        /// Why it failed.
        error -> Nullable<Text>,
        /// The version it produced.
        parameter_version -> Nullable<BigInt>,
        /// How many times a worker has claimed it.
        attempts -> Integer,
        /// When a worker last claimed it.
        started_at -> Nullable<Text>,
        /// `pending`, `delivered` or `failed`.
        callback_status -> Text,
        /// Callback POSTs tried.
        callback_attempts -> Integer,
        /// The last callback attempt's error.
        callback_error -> Nullable<Text>,
        /// When callback delivery ended.
        callback_finished_at -> Nullable<Text>,
        /// The study server's timestamp exactly as sent.
        sent_timestamp -> Text,
    }
}

diesel::table! {
    /// What each completed update's parameters were computed from.
    update_provenance (update_id) {
        /// The update request.
        update_id -> Text,
        /// The version it produced.
        parameter_version -> BigInt,
        /// The service's version.
        service_version -> Text,
        /// The algorithm's name.
        algorithm -> Text,
        /// SHA-256 of the effective configuration, hex.
        config_hash -> Text,
        /// Study records read.
        rows_read -> BigInt,
        /// The backup taken before the update.
        backup_file -> Nullable<Text>,
        /// When the update completed.
        created_at -> Text,
        /// The largest study-data id the update could read.
        last_study_data_id -> BigInt,
        /// The policies of the decisions it learned from, comma-separated.
        included_policies -> Text,
        /// The newest decision its job could read, when it imputed rewards.
        last_action_id -> Nullable<BigInt>,
        /// Decisions made at or before this without an upload were learned from with
        /// `default_reward` (NULL: missing outcomes were left out).
        imputed_decided_by -> Nullable<Text>,
        /// The reward those decisions were learned from with.
        default_reward -> Nullable<Double>,
        /// How many records it imputed.
        imputed_rows -> Nullable<BigInt>,
        /// The largest correction id the update could read (NULL: before corrections).
        last_correction_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Each participant's history: enrollment, window changes, withdrawal.
    participant_events (id) {
        /// Surrogate key; its order is the order of events.
        id -> BigInt,
        /// The participant.
        user_id -> Text,
        /// `enrolled`, `enrollment_changed` or `withdrawn`.
        kind -> Text,
        /// When the service recorded it.
        recorded_at -> Text,
        /// The window's start after the event.
        study_start -> Nullable<Text>,
        /// Its text as sent.
        study_start_sent -> Nullable<Text>,
        /// The window's end after the event.
        study_end -> Nullable<Text>,
        /// Its text as sent.
        study_end_sent -> Nullable<Text>,
        /// The withdrawal's reason.
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    /// The audit record of each erasure (no participant id).
    erasures (id) {
        /// The erasure's id.
        id -> Text,
        /// When it happened.
        erased_at -> Text,
        /// The erased participant's `users.id`.
        participant_number -> BigInt,
        /// The id their decisions are kept under.
        pseudonym -> Text,
        /// A JSON array of `[table, rows]` pairs.
        row_counts -> Text,
        /// The backup taken just before.
        backup_file -> Text,
    }
}

diesel::table! {
    /// The update lease: who runs the one update job, and until when (one row, id 1).
    update_lease (id) {
        /// Always 1.
        id -> BigInt,
        /// The running job's token, or none.
        holder -> Nullable<Text>,
        /// The request the job runs.
        update_id -> Nullable<Text>,
        /// When the claim lapses unless completed or released first.
        expires_at -> Nullable<Text>,
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
    update_lease,
    participant_events,
    erasures,
);

diesel::table! {
    /// Corrections of uploads: each linked to the `study_data` row it corrects, which is kept.
    study_data_corrections (id) {
        /// Surrogate key; its order is the order corrections were stored.
        id -> BigInt,
        /// The `study_data` row corrected.
        study_data_id -> BigInt,
        /// The participant.
        user_id -> Text,
        /// The kind of decision.
        decision_type -> Text,
        /// The participant's decision time.
        decision_idx -> BigInt,
        /// The study server's timestamp.
        request_timestamp -> Text,
        /// That timestamp as sent.
        sent_timestamp -> Text,
        /// When the correction was received.
        created_at -> Text,
        /// The corrected context.
        context -> Text,
        /// The corrected state.
        state -> Text,
        /// The corrected outcome.
        outcome -> Text,
        /// The reward derived from the corrected outcome.
        reward -> Double,
    }
}
