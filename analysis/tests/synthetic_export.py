"""Writes a synthetic `justin export --for lifejacket` directory of a `thompson` study, following
the file formats of docs/analysis.md: the tests' stand-in for a real export.

The study: participants with staggered starts and ends on a one-decision-a-day grid, thompson
with one feature (temperature), an update after every `update_every` decisions that reads every
row uploaded before it (in upload order), some uploads held back until after the next update
(late), some missing outcomes, some unavailable decisions and some in-study times without a call.
The posterior is thompson's: P = S0^-1 + A/s2, m = P^-1 (S0^-1 m0 + b/s2), and the probability
clip(Phi(x'm_g / sqrt(x'S_gg x)), lo, hi).
"""

import json
import math
import pathlib

import numpy as np

LO, HI = 0.2, 0.8
NOISE_VARIANCE = 1.0
PRIOR_VARIANCE = 10.0
FEATURES = ["temperature"]
COVARIATES = ["intercept", "temperature"]
D = 1 + len(FEATURES)
K = 2 * D


def normal_cdf(z):
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def text(v):
    """A number as the export writes it: the shortest round-trip text; empty for None."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def beta_of(mean, precision):
    factor = np.linalg.cholesky(precision)
    entries = []
    for i in range(K):
        for j in range(i + 1):
            entries.append(math.log(factor[i, j]) if i == j else factor[i, j])
    return [float(v) for v in mean] + entries


def beta_names():
    names = [f"mean[{i}]" for i in range(K)]
    for i in range(K):
        for j in range(i + 1):
            names.append(f"log_l[{i}][{j}]" if i == j else f"l[{i}][{j}]")
    return names


def probability(mean, covariance, x):
    location = float(np.dot(x, mean[D:]))
    variance = float(x @ covariance[D:, D:] @ x)
    return min(max(normal_cdf(location / math.sqrt(variance)), LO), HI)


def write(
    directory,
    participants=8,
    times=12,
    update_every=16,
    seed=3,
    unavailable_share=0.1,
    missing_share=0.1,
    late_share=0.1,
    missed_call_share=0.05,
    stagger=True,
):
    """Writes the export into `directory` (created) and returns a dict of what it holds."""
    rng = np.random.default_rng(seed)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    users = [f"u{i:02d}" for i in range(participants)]
    # In-study windows [start, end) on the grid; the first two participants are staggered.
    windows = {u: (0, times) for u in users}
    if stagger and participants >= 2 and times >= 6:
        windows[users[0]] = (2, times)
        windows[users[1]] = (0, times - 3)

    prior_mean = np.zeros(K)
    prior_covariance = np.eye(K) * PRIOR_VARIANCE
    prior_precision = np.linalg.inv(prior_covariance)
    versions = [  # (mean, covariance, precision, update info)
        (prior_mean.copy(), prior_covariance.copy(), prior_precision.copy(), None)
    ]
    uploaded = []  # rows available to the next update, in upload order
    held = []  # late uploads, sent after the next update
    update_rows = []  # (version, row)
    used_in = {}
    cells = {}  # (user, t) -> the cell's decision
    decisions = 0
    for t in range(times):
        for user in users:
            start, end = windows[user]
            if not (start <= t < end):
                continue
            if rng.random() < missed_call_share:
                cells[(user, t)] = {"called": False}
                continue
            version = len(versions)
            mean, covariance, _, _ = versions[-1]
            available = rng.random() >= unavailable_share
            temperature = float(np.round(rng.normal(25.0, 5.0), 3))
            x = np.array([1.0, temperature])
            cell = {"called": True, "version": version, "available": available, "x": x}
            if available:
                p = probability(mean, covariance, x)
                action = int(rng.random() < p)
                reward = 1.0 + 0.05 * temperature + action * (0.4 - 0.01 * temperature)
                reward = float(reward + rng.normal(0.0, 1.0))
                cell.update(prob=p, action=action)
                if rng.random() >= missing_share:
                    cell["reward"] = reward
                    row = {"user": user, "t": t, "x": x, "action": action, "prob": p, "reward": reward}
                    (held if rng.random() < late_share else uploaded).append(row)
            else:
                cell.update(prob=0.0, action=0)
            cells[(user, t)] = cell
            decisions += 1
            if decisions % update_every == 0:
                gram = np.zeros((K, K))
                moment = np.zeros(K)
                new_version = len(versions) + 1
                for row in uploaded:
                    phi = np.concatenate([row["x"], row["action"] * row["x"]])
                    gram += np.outer(phi, phi)
                    moment += phi * row["reward"]
                    update_rows.append((new_version, row))
                    used_in.setdefault((row["user"], row["t"]), new_version)
                precision = prior_precision + gram / NOISE_VARIANCE
                new_covariance = np.linalg.inv(precision)
                new_mean = np.linalg.solve(precision, prior_precision @ prior_mean + moment / NOISE_VARIANCE)
                versions.append((new_mean, new_covariance, precision, {"rows_read": len(uploaded)}))
                uploaded.extend(held)
                held = []

    # Dense policy numbers over the versions that drove in-study called decisions.
    driving = sorted({c["version"] for c in cells.values() if c.get("called")})
    policy_of = {v: i + 1 for i, v in enumerate(driving)}
    first_t = 0
    last_t = times - 1

    def line(fields):
        return ",".join(fields) + "\n"

    grid_header = [
        "user_id", "calendar_t", "scheduled_at", "decision_type", "in_study", "called",
        "decision_idx", "available", "action", "action1_prob", "parameter_version", "policy_num",
        "policy", "drawn_by_policy", "observed", "reward", "first_used_in_version", "has_state",
        "corrections",
    ] + COVARIATES
    counts = {"participants": participants, "grid_rows": 0, "decisions": 0, "unplaced_decisions": 0,
              "in_study_cells_without_call": 0, "participants_left_out": 0,
              "updates": len(versions) - 1, "policy_decreases": 0}
    with open(directory / "grid.csv", "w", encoding="utf-8") as f:
        f.write(line(grid_header))
        for user in sorted(users):
            start, end = windows[user]
            idx = 0
            previous_policy = None
            in_study_rows = []
            for t in range(first_t, last_t + 1):
                in_study = start <= t < end
                cell = cells.get((user, t), {"called": False})
                row = {"user_id": user, "calendar_t": t, "in_study": in_study, "cell": cell}
                in_study_rows.append(row)
            # policy_num on in-study rows; carried from the previous called row (or the next).
            called_policies = [policy_of[r["cell"]["version"]] if r["cell"].get("called") else None
                               for r in in_study_rows]
            for i, row in enumerate(in_study_rows):
                if not row["in_study"]:
                    row["policy_num"] = None
                    continue
                if called_policies[i] is not None:
                    row["policy_num"] = called_policies[i]
                    continue
                before = [p for p in called_policies[:i] if p is not None]
                after = [p for p in called_policies[i + 1:] if p is not None]
                row["policy_num"] = before[-1] if before else (after[0] if after else 1)
            for row in in_study_rows:
                t = row["calendar_t"]
                cell = row["cell"]
                called = cell.get("called", False)
                available = called and cell["available"]
                observed = "reward" in cell
                if row["in_study"] and not called:
                    counts["in_study_cells_without_call"] += 1
                fields = [
                    user, text(t), f"2026-01-{5 + t:02d}T08:00:00Z" if t < 26 else "2026-02-01T08:00:00Z",
                    "default", text(int(row["in_study"])), text(int(called)),
                    text(idx) if called else "",
                    text(int(available)), text(int(cell.get("action", 0)) if called else 0),
                    text(cell["prob"]) if called else "0.0",
                    text(cell["version"]) if called else "",
                    text(row["policy_num"]) if row["policy_num"] is not None else "",
                    "algorithm" if called else "",
                    text(int(available)),
                    text(int(observed)),
                    text(cell["reward"]) if observed else "0.0",
                    text(used_in.get((user, t))) if (user, t) in used_in else "",
                    text(int(available)),
                    "0" if observed else "",
                ]
                if available:
                    fields += [text(v) for v in cell["x"]]
                else:
                    fields += ["" for _ in COVARIATES]
                f.write(line(fields))
                counts["grid_rows"] += 1
                if called:
                    counts["decisions"] += 1
                    idx += 1
    with open(directory / "update_rows.csv", "w", encoding="utf-8") as f:
        header = ["parameter_version", "policy_num", "user_id", "calendar_t", "decision_type",
                  "decision_idx", "action", "action1_prob", "reward"] + COVARIATES
        f.write(line(header))
        for version, row in update_rows:
            policy = policy_of.get(version)
            f.write(line([
                text(version), text(policy) if policy else "", row["user"], text(row["t"]),
                "default", "", text(row["action"]), text(row["prob"]), text(row["reward"]),
            ] + [text(v) for v in row["x"]]))
    with open(directory / "parameters.jsonl", "w", encoding="utf-8") as f:
        for number, (mean, covariance, precision, update) in enumerate(versions, start=1):
            parameters = {
                "features": FEATURES, "min_probability": LO, "max_probability": HI,
                "prior": {"mean": prior_mean.tolist(), "covariance": prior_covariance.tolist(),
                          "noise_variance": NOISE_VARIANCE},
                "mean": mean.tolist(), "covariance": covariance.tolist(),
            }
            entry = {
                "parameter_version": number,
                "policy_num": policy_of.get(number),
                "algorithm": "thompson",
                "created_at": "2026-01-05T00:00:00Z",
                "parameters": parameters,
                "beta": beta_of(mean, precision),
                "constants": {
                    "bounds": [LO, HI],
                    "prior_mean": prior_mean.tolist(),
                    "prior_precision": prior_precision.tolist(),
                    "noise_variance": NOISE_VARIANCE,
                },
                "update": None if update is None else {
                    "update_id": f"update-{number}", "rows_read": update["rows_read"],
                    "included_policies": "all", "started_at": None, "finished_at": None,
                },
            }
            f.write(json.dumps(entry) + "\n")
    manifest = {
        "format": "justin-lifejacket-export",
        "format_version": 1,
        "exported_at": "2026-03-01T00:00:00Z",
        "service_version": "0.0.0",
        "algorithm": "thompson",
        "schedule": {"place_by": "time", "time_zone": "UTC", "first_decision_idx": 0,
                     "times": [{"decision_type": "default", "at": "08:00"}]},
        "calendar": {"origin_date": "2026-01-05", "cells_per_day": 1,
                     "first_calendar_t": first_t, "last_calendar_t": last_t},
        "reward_fill": 0.0,
        "covariates": COVARIATES,
        "beta_names": beta_names(),
        "policies": [{"policy_num": p, "parameter_version": v} for v, p in sorted(policy_of.items())],
        "functions": {
            "action_prob": {"name": "thompson_action1_prob", "args": [
                {"name": "beta", "source": "beta"},
                {"name": "x", "source": "covariates"},
                {"name": "bounds", "source": "constant", "key": "bounds"},
                {"name": "available", "source": "available"},
                {"name": "drawn_by_policy", "source": "drawn_by_policy"},
                {"name": "recorded_prob", "source": "recorded_prob"},
            ]},
            "update": {"name": "thompson_update_estimating", "kind": "estimating", "args": [
                {"name": "beta", "source": "beta"},
                {"name": "xs", "source": "update_covariates"},
                {"name": "actions", "source": "update_actions"},
                {"name": "rewards", "source": "update_rewards"},
                {"name": "prior_mean", "source": "constant", "key": "prior_mean"},
                {"name": "prior_precision", "source": "constant", "key": "prior_precision"},
                {"name": "noise_variance", "source": "constant", "key": "noise_variance"},
                {"name": "n_participants", "source": "update_participants"},
            ]},
        },
        "counts": counts,
    }
    with open(directory / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    (directory / "unplaced.csv").write_text(
        "user_id,decision_type,decision_idx,request_timestamp,reason\n", encoding="utf-8")
    (directory / "README.txt").write_text("A synthetic export for the tests.\n", encoding="utf-8")
    return {"versions": len(versions), "policies": policy_of, "windows": windows, "cells": cells}
