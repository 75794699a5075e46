"""Converts a `justin export --for lifejacket` directory into lifejacket's inputs.

    python -m justin_lifejacket.convert EXPORT_DIR OUT_DIR

writes into OUT_DIR (created; it must not hold files already):

- analysis_df.pkl: grid.csv as a pandas DataFrame (user_id as text, every other named column
  numeric), one row per participant x calendar_t;
- action_prob_func_args.pkl: {calendar_t: {user_id: tuple}}, the arguments of the algorithm's
  probability function for every in-study cell, () for the others;
- alg_update_func_args.pkl: {policy_num: {user_id: tuple}}, for every policy but the initial
  one, the arguments of the update's per-participant function built from the rows that update
  read, () for a participant who gave it none;
- functions/: the four function files (the algorithm's two, named in manifest.json, and the
  inference's two);
- lifejacket_args.json: everything else analyze_dataset takes (argument indices, column names,
  function file names), read by `python -m justin_lifejacket.run OUT_DIR`.

Nothing here knows an algorithm: the arguments are built from the ArgSpecs in manifest.json
(docs/analysis.md lists the sources). Two choices are the converter's, both documented there:

- A cell with no state (an unavailable decision, or an in-study time without a call) gets the
  dummy covariate vector (1, 0, ..., 0) as its covariates, in the arguments and in the table,
  so that every in-study cell has arguments of one shape. Its probability does not depend on
  them (the probability function returns available x the recorded probability there).
- The probability recorded for such a cell is 0 (`--unavailable-prob recorded`, the default),
  or a fixed placeholder in (0, 1) (`--unavailable-prob 0.5`), which the probability function
  is then given as a fixed probability not drawn by the policy.
"""

import argparse
import json
import math
import pathlib
import pickle
import shutil
import sys

import numpy as np
import pandas as pd

from .export import ExportError, read_export

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_FUNCTIONS_DIR = HERE.parent / "functions"
DEFAULT_INFERENCE = "wcls_excursion"

PROBABILITY_SOURCES = {"beta", "constant", "covariates", "available", "drawn_by_policy", "recorded_prob"}
UPDATE_SOURCES = {
    "beta",
    "constant",
    "update_covariates",
    "update_actions",
    "update_rewards",
    "update_participants",
}

# The columns lifejacket is told about (its *_col_name options).
COLUMN_NAMES = {
    "subject_id_col_name": "user_id",
    "calendar_t_col_name": "calendar_t",
    "active_col_name": "in_study",
    "action_col_name": "action",
    "action_prob_col_name": "action1_prob",
    "policy_num_col_name": "policy_num",
    "reward_col_name": "reward",
}
INTEGER_COLUMNS = ["calendar_t", "in_study", "called", "available", "action", "drawn_by_policy", "observed", "has_state"]


class ConversionError(Exception):
    """The export cannot become lifejacket's inputs; the message says why."""


def dummy_covariates(count):
    """The covariates given to a cell without a state: (1, 0, ..., 0)."""
    vector = np.zeros(count, dtype=np.float64)
    if count:
        vector[0] = 1.0
    return vector


def _int(value, default=0):
    return default if value is None else int(value)


def _constant(parameters, key, version):
    constants = parameters.get("constants") or {}
    if key not in constants:
        raise ConversionError(f"parameters.jsonl: version {version} has no constant {key!r}")
    value = constants[key]
    if isinstance(value, (int, float)):
        return float(value)
    return np.asarray(value, dtype=np.float64)


def _check_specs(function, allowed, role):
    args = function.get("args")
    if not isinstance(args, list) or not args:
        raise ConversionError(f"manifest.json: the {role} function lists no arguments")
    for spec in args:
        if spec.get("source") not in allowed:
            raise ConversionError(
                f"manifest.json: the {role} function's argument {spec.get('name')!r} has "
                f"source {spec.get('source')!r}, which a {role} function cannot take"
            )
    beta = [i for i, spec in enumerate(args) if spec["source"] == "beta"]
    if len(beta) != 1:
        raise ConversionError(f"manifest.json: the {role} function must take beta exactly once")
    return args, beta[0]


def build_table(export, unavailable_prob=None):
    """grid.csv as lifejacket's DataFrame. unavailable_prob: None keeps the recorded
    probability of in-study cells with available 0; a number in (0, 1) replaces it."""
    covariates = export.covariates
    dummy = dummy_covariates(len(covariates))
    frame = pd.DataFrame(export.grid)
    if frame.empty:
        raise ConversionError("grid.csv has no rows: the study has no participant in study")
    for column in INTEGER_COLUMNS:
        if frame[column].isna().any():
            raise ConversionError(f"grid.csv: {column} is empty on some row")
        frame[column] = frame[column].astype("int64")
    frame["user_id"] = frame["user_id"].astype(str)
    for column in ["decision_idx", "action1_prob", "parameter_version", "policy_num", "reward", "first_used_in_version",
                   "corrections"]:
        frame[column] = frame[column].astype("float64")
    no_state = frame["has_state"] == 0
    for i, name in enumerate(covariates):
        frame[name] = frame[name].astype("float64")
        frame.loc[no_state, name] = dummy[i]
    if unavailable_prob is not None:
        if not (0.0 < unavailable_prob < 1.0):
            raise ConversionError("--unavailable-prob must be 'recorded' or a number in (0, 1)")
        placeholder = (frame["in_study"] == 1) & (frame["available"] == 0)
        frame.loc[placeholder, "action1_prob"] = unavailable_prob
    frame = frame.sort_values(["user_id", "calendar_t"], kind="stable").reset_index(drop=True)
    return frame


def build_action_prob_args(export, frame, unavailable_prob=None):
    """{calendar_t: {user_id: tuple}} from the probability function's ArgSpecs.

    With a placeholder probability (unavailable_prob), an in-study cell with available 0 is
    given to the function as a decision with a fixed probability: available 1, drawn_by_policy
    0 and the placeholder as the recorded probability, so the function returns the placeholder
    (the table's `available` column stays 0)."""
    function = export.manifest["functions"]["action_prob"]
    specs, _ = _check_specs(function, PROBABILITY_SOURCES, "probability")
    covariates = export.covariates
    betas = {}

    def beta_of(policy_num):
        if policy_num not in betas:
            version = export.policy_versions.get(policy_num)
            if version is None:
                raise ConversionError(
                    f"grid.csv: policy_num {policy_num} is not among manifest.json's policies"
                )
            betas[policy_num] = np.asarray(export.parameters[version]["beta"], dtype=np.float64)
        return betas[policy_num]

    args = {int(t): {} for t in sorted(frame["calendar_t"].unique())}
    for row in frame.itertuples(index=False):
        row = row._asdict()
        t, user = int(row["calendar_t"]), row["user_id"]
        if row["in_study"] != 1:
            args[t][user] = ()
            continue
        if row["policy_num"] is None or math.isnan(row["policy_num"]):
            raise ConversionError(f"grid.csv: {user} at calendar_t {t} is in study without a policy_num")
        policy_num = int(row["policy_num"])
        version = export.policy_versions[policy_num] if policy_num in export.policy_versions else None
        available, drawn = float(row["available"]), float(row["drawn_by_policy"])
        if unavailable_prob is not None and available == 0.0:
            available, drawn = 1.0, 0.0
        values = []
        for spec in specs:
            source = spec["source"]
            if source == "beta":
                values.append(beta_of(policy_num))
            elif source == "constant":
                beta_of(policy_num)
                values.append(_constant(export.parameters[version], spec["key"], version))
            elif source == "covariates":
                values.append(np.array([row[name] for name in covariates], dtype=np.float64))
            elif source == "available":
                values.append(available)
            elif source == "drawn_by_policy":
                values.append(drawn)
            elif source == "recorded_prob":
                values.append(float(row["action1_prob"]))
        args[t][user] = tuple(values)
    return args


def build_update_args(export, frame):
    """{policy_num: {user_id: tuple}} from the update function's ArgSpecs, for every policy that
    drove an in-study decision except the initial one."""
    function = export.manifest["functions"]["update"]
    specs, _ = _check_specs(function, UPDATE_SOURCES, "update")
    covariates = export.covariates
    users = list(dict.fromkeys(frame["user_id"]))
    known = set(users)
    in_study = frame[frame["in_study"] == 1]
    policies = sorted(int(p) for p in in_study["policy_num"].unique())
    rows_by_version = {}
    for row in export.update_rows:
        rows_by_version.setdefault(int(row["parameter_version"]), []).append(row)
    result = {}
    for policy_num in policies[1:]:
        version = export.policy_versions[policy_num]
        parameters = export.parameters[version]
        rows = rows_by_version.get(version, [])
        update = parameters.get("update") or {}
        rows_read = update.get("rows_read")
        if rows_read is not None and rows_read != len(rows):
            raise ConversionError(
                f"parameter version {version} (policy {policy_num}): its update read "
                f"{rows_read} rows and update_rows.csv holds {len(rows)} of them (rows deleted "
                "since, by an erasure): the update cannot be reproduced, so lifejacket's "
                "check that its beta roots the update's estimating function cannot hold"
            )
        by_user = {}
        for row in rows:
            by_user.setdefault(row["user_id"], []).append(row)
        strangers = sorted(set(by_user) - known)
        if strangers:
            raise ConversionError(
                f"parameter version {version} (policy {policy_num}) read rows of "
                f"{len(strangers)} participant(s) who are not in grid.csv (e.g. "
                f"{strangers[0]!r}: erased, or never in study); without their rows the "
                "update's estimating function does not sum to zero at its beta"
            )
        beta = np.asarray(parameters["beta"], dtype=np.float64)
        participants = float(len(by_user))
        per_user = {}
        for user in users:
            user_rows = by_user.get(user)
            if not user_rows:
                per_user[user] = ()
                continue
            values = []
            for spec in specs:
                source = spec["source"]
                if source == "beta":
                    values.append(beta)
                elif source == "constant":
                    values.append(_constant(parameters, spec["key"], version))
                elif source == "update_covariates":
                    matrix = np.array(
                        [[r[name] for name in covariates] for r in user_rows], dtype=np.float64
                    )
                    if not np.all(np.isfinite(matrix)):
                        raise ConversionError(
                            f"update_rows.csv: a row of {user} read by version {version} has "
                            "no covariates"
                        )
                    values.append(matrix)
                elif source == "update_actions":
                    values.append(np.array([r["action"] for r in user_rows], dtype=np.float64))
                elif source == "update_rewards":
                    values.append(np.array([r["reward"] for r in user_rows], dtype=np.float64))
                elif source == "update_participants":
                    values.append(participants)
            per_user[user] = tuple(values)
        result[policy_num] = per_user
    return result


def lifejacket_arguments(export, inference=DEFAULT_INFERENCE):
    """The rest of analyze_dataset's arguments, as JSON."""
    functions = export.manifest["functions"]
    _, prob_beta = _check_specs(functions["action_prob"], PROBABILITY_SOURCES, "probability")
    _, update_beta = _check_specs(functions["update"], UPDATE_SOURCES, "update")
    kind = functions["update"].get("kind")
    if kind not in ("loss", "estimating"):
        raise ConversionError(f"manifest.json: the update function's kind is {kind!r}")
    return {
        "action_prob_func_filename": f"functions/{functions['action_prob']['name']}.py",
        "action_prob_func_args_beta_index": prob_beta,
        "alg_update_func_filename": f"functions/{functions['update']['name']}.py",
        "alg_update_func_type": kind,
        "alg_update_func_args_beta_index": update_beta,
        "alg_update_func_args_action_prob_index": -1,
        "alg_update_func_args_action_prob_times_index": -1,
        "alg_update_func_args_previous_betas_index": -1,
        "inference_func_filename": f"functions/{inference}.py",
        "inference_func_type": "estimating",
        "inference_func_args_theta_index": 0,
        "theta_calculation_func_filename": f"functions/{inference}_theta.py",
        **COLUMN_NAMES,
    }


def convert(export_dir, out_dir, functions_dir=DEFAULT_FUNCTIONS_DIR, inference=DEFAULT_INFERENCE, unavailable_prob=None):
    """Reads EXPORT_DIR and writes lifejacket's inputs into OUT_DIR; returns a summary."""
    export = read_export(export_dir)
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConversionError(f"{out_dir} holds files already; give a new or empty directory")
    functions_dir = pathlib.Path(functions_dir)
    names = [
        export.manifest["functions"]["action_prob"]["name"],
        export.manifest["functions"]["update"]["name"],
        inference,
        f"{inference}_theta",
    ]
    for name in names:
        if not (functions_dir / f"{name}.py").exists():
            raise ConversionError(f"{functions_dir}/{name}.py is missing: the function file for {name}")
    frame = build_table(export, unavailable_prob)
    action_prob_args = build_action_prob_args(export, frame, unavailable_prob)
    update_args = build_update_args(export, frame)
    arguments = lifejacket_arguments(export, inference)
    arguments["unavailable_prob"] = "recorded" if unavailable_prob is None else unavailable_prob
    (out_dir / "functions").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(functions_dir / f"{name}.py", out_dir / "functions" / f"{name}.py")
    with open(out_dir / "analysis_df.pkl", "wb") as f:
        pickle.dump(frame, f)
    with open(out_dir / "action_prob_func_args.pkl", "wb") as f:
        pickle.dump(action_prob_args, f)
    with open(out_dir / "alg_update_func_args.pkl", "wb") as f:
        pickle.dump(update_args, f)
    with open(out_dir / "lifejacket_args.json", "w", encoding="utf-8") as f:
        json.dump(arguments, f, indent=2)
        f.write("\n")
    in_study = frame[frame["in_study"] == 1]
    return {
        "participants": int(frame["user_id"].nunique()),
        "calendar_times": int(frame["calendar_t"].nunique()),
        "in_study_cells": int(len(in_study)),
        "unavailable_or_uncalled": int((in_study["available"] == 0).sum()),
        "missing_outcomes": int(((in_study["available"] == 1) & (in_study["observed"] == 0)).sum()),
        "policies": sorted(int(p) for p in in_study["policy_num"].unique()),
        "updates": sorted(update_args),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m justin_lifejacket.convert",
        description="Convert a `justin export --for lifejacket` directory into lifejacket's inputs.",
    )
    parser.add_argument("export_dir", help="the directory `justin export --for lifejacket` wrote")
    parser.add_argument("out_dir", help="where to write lifejacket's inputs (new or empty)")
    parser.add_argument(
        "--functions-dir",
        default=str(DEFAULT_FUNCTIONS_DIR),
        help="where the function files are (default: analysis/functions)",
    )
    parser.add_argument(
        "--inference",
        default=DEFAULT_INFERENCE,
        help="the inference function NAME (files NAME.py and NAME_theta.py; default wcls_excursion)",
    )
    parser.add_argument(
        "--unavailable-prob",
        default="recorded",
        help="probability written for in-study cells with available 0: 'recorded' (0, the "
        "default) or a placeholder in (0, 1); see docs/analysis.md",
    )
    options = parser.parse_args(argv)
    unavailable = None
    if options.unavailable_prob != "recorded":
        try:
            unavailable = float(options.unavailable_prob)
        except ValueError:
            parser.error("--unavailable-prob must be 'recorded' or a number in (0, 1)")
    try:
        summary = convert(
            options.export_dir,
            options.out_dir,
            options.functions_dir,
            options.inference,
            unavailable,
        )
    except (ExportError, ConversionError) as e:
        print(f"convert: {e}", file=sys.stderr)
        return 1
    print(
        f"convert: {summary['participants']} participants x {summary['calendar_times']} "
        f"calendar times, {summary['in_study_cells']} in-study cells "
        f"({summary['unavailable_or_uncalled']} unavailable or without a call, "
        f"{summary['missing_outcomes']} missing outcomes), policies {summary['policies']}, "
        f"update arguments for policies {summary['updates']}; written to {options.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
