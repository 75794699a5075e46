"""Reading a `justin export --for lifejacket DIR` directory (docs/analysis.md describes the files).

The CSV files are in the dialect of JustIn's backups: comma-separated, a header line, an empty
unquoted field for a missing value, floats as the shortest text that reads back to the same
number. Nothing here knows an algorithm: the manifest names the covariates and the functions'
arguments.
"""

import csv
import json
import math
import pathlib
from dataclasses import dataclass, field

FORMAT = "justin-lifejacket-export"
FORMAT_VERSION = 1

# grid.csv's columns before the covariates, in order.
GRID_COLUMNS = [
    "user_id",
    "calendar_t",
    "scheduled_at",
    "decision_type",
    "in_study",
    "called",
    "decision_idx",
    "available",
    "action",
    "action1_prob",
    "parameter_version",
    "policy_num",
    "policy",
    "drawn_by_policy",
    "observed",
    "reward",
    "first_used_in_version",
    "has_state",
    "corrections",
]
# update_rows.csv's columns before the covariates, in order.
UPDATE_ROW_COLUMNS = [
    "parameter_version",
    "policy_num",
    "user_id",
    "calendar_t",
    "decision_type",
    "decision_idx",
    "action",
    "action1_prob",
    "reward",
]
# Columns holding text; every other column is a number (empty = missing).
TEXT_COLUMNS = {"user_id", "scheduled_at", "decision_type", "policy"}


class ExportError(Exception):
    """The directory is not a readable export of this format."""


@dataclass
class Export:
    """An export directory, read."""

    directory: pathlib.Path
    manifest: dict
    covariates: list
    grid: list  # dicts, one per grid row, numbers as float (None when empty)
    update_rows: list  # dicts, one per row an update read, in the order it read them
    parameters: dict  # parameter_version -> the parameters.jsonl object
    policy_versions: dict = field(default_factory=dict)  # policy_num -> parameter_version


def _number(text, column, where):
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ExportError(f"{where}: {column} is {text!r}, not a number") from None


def _read_csv(path, fixed, covariates):
    if not path.exists():
        raise ExportError(f"{path} is missing")
    expected = fixed + covariates
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ExportError(f"{path} is empty: it needs a header line") from None
        if header != expected:
            raise ExportError(
                f"{path.name}: the header is {','.join(header)}; this reader expects "
                f"{','.join(expected)} (the covariates from manifest.json)"
            )
        for line, record in enumerate(reader, start=2):
            if len(record) != len(header):
                raise ExportError(
                    f"{path.name} line {line}: {len(record)} fields, the header has "
                    f"{len(header)}"
                )
            where = f"{path.name} line {line}"
            row = {}
            for name, text in zip(header, record):
                row[name] = text if name in TEXT_COLUMNS else _number(text, name, where)
            rows.append(row)
    return rows


def read_export(directory):
    """Reads and checks an export directory; raises ExportError naming what is wrong."""
    directory = pathlib.Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise ExportError(
            f"{directory} holds no manifest.json: give the directory `justin export --for "
            "lifejacket DIR` wrote"
        )
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ExportError(f"manifest.json: format is {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"manifest.json: format_version {manifest.get('format_version')!r}; this reader "
            f"knows {FORMAT_VERSION}"
        )
    for key in ("covariates", "policies", "functions", "reward_fill"):
        if key not in manifest:
            raise ExportError(f"manifest.json has no {key!r}")
    covariates = list(manifest["covariates"])
    grid = _read_csv(directory / "grid.csv", GRID_COLUMNS, covariates)
    update_rows = _read_csv(directory / "update_rows.csv", UPDATE_ROW_COLUMNS, covariates)
    parameters = {}
    path = directory / "parameters.jsonl"
    if not path.exists():
        raise ExportError(f"{path} is missing")
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            entry = json.loads(line)
            version = entry.get("parameter_version")
            if not isinstance(version, int):
                raise ExportError(f"parameters.jsonl line {line_number}: no parameter_version")
            parameters[version] = entry
    policy_versions = {}
    for policy in manifest["policies"]:
        policy_versions[int(policy["policy_num"])] = int(policy["parameter_version"])
    for policy_num, version in policy_versions.items():
        if version not in parameters:
            raise ExportError(
                f"manifest.json: policy {policy_num} is parameter version {version}, which "
                "parameters.jsonl does not hold"
            )
    for version, entry in parameters.items():
        beta = entry.get("beta")
        if not isinstance(beta, list) or not all(
            isinstance(b, (int, float)) and math.isfinite(b) for b in beta
        ):
            raise ExportError(f"parameters.jsonl: version {version} has no finite beta")
    return Export(
        directory=directory,
        manifest=manifest,
        covariates=covariates,
        grid=grid,
        update_rows=update_rows,
        parameters=parameters,
        policy_versions=policy_versions,
    )
