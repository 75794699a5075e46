"""Checks that an export holds the cases the analysis must handle (`make lifejacket`'s study).

    python -m justin_lifejacket.study_check EXPORT_DIR [--min-policies N]

Counts, from grid.csv and manifest.json: unavailable decisions, missing outcomes, late uploads
(an uploaded outcome that the first update after its decision did not read), in-study times
without a call, policies, unplaced decisions and policy decreases. Exits 1 when one of the
first four is absent, when there are fewer than N policies, or when a decision is unplaced or
a policy number decreases.
"""

import argparse
import sys

from .export import ExportError, read_export


def counts(export):
    """What the study holds, from the export."""
    versions = sorted(export.parameters)
    unavailable = missing = late = uncalled = 0
    for row in export.grid:
        if row["in_study"] != 1:
            continue
        if row["called"] != 1:
            uncalled += 1
            continue
        if row["available"] != 1:
            unavailable += 1
            continue
        if row["observed"] != 1:
            missing += 1
            continue
        version = int(row["parameter_version"])
        later = [v for v in versions if v > version]
        used = row["first_used_in_version"]
        if later and (used is None or int(used) > later[0]):
            late += 1
    manifest_counts = export.manifest.get("counts", {})
    return {
        "unavailable": unavailable,
        "missing_outcomes": missing,
        "late_uploads": late,
        "in_study_times_without_call": uncalled,
        "policies": len(export.policy_versions),
        "unplaced_decisions": int(manifest_counts.get("unplaced_decisions", 0)),
        "policy_decreases": int(manifest_counts.get("policy_decreases", 0)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m justin_lifejacket.study_check")
    parser.add_argument("export_dir")
    parser.add_argument("--min-policies", type=int, default=2)
    options = parser.parse_args(argv)
    try:
        found = counts(read_export(options.export_dir))
    except ExportError as e:
        print(f"study_check: {e}", file=sys.stderr)
        return 1
    print("study_check: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    problems = [
        f"no {name.replace('_', ' ')}"
        for name in ("unavailable", "missing_outcomes", "late_uploads", "in_study_times_without_call")
        if found[name] == 0
    ]
    if found["policies"] < options.min_policies:
        problems.append(f"{found['policies']} policies, fewer than {options.min_policies}")
    if found["unplaced_decisions"]:
        problems.append(f"{found['unplaced_decisions']} unplaced decisions")
    if found["policy_decreases"]:
        problems.append(f"{found['policy_decreases']} policy decreases")
    if problems:
        print("study_check: the study lacks what it must hold: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
