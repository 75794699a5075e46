"""Runs lifejacket on a converted study, without prompts.

    python -m justin_lifejacket.run OUT_DIR [--no-diagnostics]

OUT_DIR is what `python -m justin_lifejacket.convert` wrote. This runs lifejacket's input
checks and `analyze_dataset` with suppress_interactive_data_checks=True (every check runs; only
the prompts are skipped) and the diagnostic suite on, writes lifejacket's results into
OUT_DIR/results/ (analysis.pkl, debug_pieces.pkl, diagnostic_report.pkl) and prints the
estimate, its standard errors (adjusted and classical sandwich), the measured input checks and
the diagnostic verdict as lifejacket gives it.

Exit status: 0 when the analysis ran to its end, whatever the verdict; 1 when an input check
failed (lifejacket raises) or the analysis could not run.
"""

import argparse
import json
import logging
import pathlib
import pickle
import sys
import time
import traceback

import jax

# Before anything makes an array: the functions compute in float64.
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402


def _load(out_dir, name):
    with open(out_dir / name, "rb") as f:
        return pickle.load(f)


def analyze(out_dir, run_diagnostics=True):
    """Runs analyze_dataset on OUT_DIR's inputs; returns (result dict, diagnostic report)."""
    from lifejacket.helper_functions import load_function_from_same_named_file
    from lifejacket.post_deployment_analysis import analyze_dataset

    out_dir = pathlib.Path(out_dir)
    with open(out_dir / "lifejacket_args.json", encoding="utf-8") as f:
        arguments = json.load(f)
    results = out_dir / "results"
    results.mkdir(exist_ok=True)

    def function(key):
        return load_function_from_same_named_file(str(out_dir / arguments[key]))

    result = analyze_dataset(
        output_dir=results,
        analysis_df=_load(out_dir, "analysis_df.pkl"),
        action_prob_func=function("action_prob_func_filename"),
        action_prob_func_args=_load(out_dir, "action_prob_func_args.pkl"),
        action_prob_func_args_beta_index=arguments["action_prob_func_args_beta_index"],
        alg_update_func=function("alg_update_func_filename"),
        alg_update_func_type=arguments["alg_update_func_type"],
        alg_update_func_args=_load(out_dir, "alg_update_func_args.pkl"),
        alg_update_func_args_beta_index=arguments["alg_update_func_args_beta_index"],
        alg_update_func_args_action_prob_index=arguments["alg_update_func_args_action_prob_index"],
        alg_update_func_args_action_prob_times_index=arguments[
            "alg_update_func_args_action_prob_times_index"
        ],
        alg_update_func_args_previous_betas_index=arguments[
            "alg_update_func_args_previous_betas_index"
        ],
        inference_func=function("inference_func_filename"),
        inference_func_type=arguments["inference_func_type"],
        inference_func_args_theta_index=arguments["inference_func_args_theta_index"],
        theta_calculation_func=function("theta_calculation_func_filename"),
        active_col_name=arguments["active_col_name"],
        action_col_name=arguments["action_col_name"],
        policy_num_col_name=arguments["policy_num_col_name"],
        calendar_t_col_name=arguments["calendar_t_col_name"],
        subject_id_col_name=arguments["subject_id_col_name"],
        action_prob_col_name=arguments["action_prob_col_name"],
        reward_col_name=arguments["reward_col_name"],
        suppress_interactive_data_checks=True,
        suppress_all_data_checks=False,
        form_adjusted_meat_adjustments_explicitly=False,
        run_diagnostics=run_diagnostics,
    )
    report = None
    report_path = results / "diagnostic_report.pkl"
    if run_diagnostics and report_path.exists():
        report = _load(results, "diagnostic_report.pkl")
    return result, report


def describe(result, report):
    """The lines the runner prints after lifejacket's own output."""
    theta = np.asarray(result["theta_est"], dtype=np.float64)
    adjusted = np.asarray(result["adjusted_sandwich_var_estimate"], dtype=np.float64)
    classical = np.asarray(result["classical_sandwich_var_estimate"], dtype=np.float64)
    names = ["alpha (reward at action 0)", "effect (causal excursion effect)"]
    if len(names) != len(theta):
        names = [f"theta[{i}]" for i in range(len(theta))]
    lines = ["", "justin_lifejacket: results"]
    lines.append(f"  {'parameter':<36} {'estimate':>12} {'adjusted SE':>12} {'classical SE':>12}")
    for i, name in enumerate(names):
        lines.append(
            f"  {name:<36} {theta[i]:>12.6g} {np.sqrt(max(adjusted[i, i], 0.0)):>12.6g} "
            f"{np.sqrt(max(classical[i, i], 0.0)):>12.6g}"
        )
    if report is None:
        lines.append("  diagnostics: not run or no report written")
        return lines
    lines.append(f"  diagnostic verdict: {report.verdict}")
    lines.append(f"  diagnostic classification: {report.classification}")
    checks = dict(getattr(report, "input_check_results", {}) or {})
    checks.update(getattr(report, "check_results", {}) or {})
    for name, check in checks.items():
        lines.append(f"    {name}: {check.status}")
        for criterion in getattr(check, "criteria", []) or []:
            if criterion.ok is False:
                lines.append(f"      not met: {criterion.description} ({criterion.value})")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m justin_lifejacket.run",
        description="Run lifejacket's checks and analysis on a converted JustIn study.",
    )
    parser.add_argument("out_dir", help="the directory justin_lifejacket.convert wrote")
    parser.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="skip lifejacket's diagnostic suite (then no verdict)",
    )
    parser.add_argument(
        "--phase-times",
        action="store_true",
        help="print how long each of lifejacket's phases took",
    )
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if options.phase_times:
        # lifejacket logs each phase's duration at INFO from helper_functions.
        phases = logging.getLogger("lifejacket.helper_functions")
        phases.setLevel(logging.INFO)
        phases.addFilter(lambda record: record.getMessage().startswith("Phase "))
    started = time.monotonic()
    try:
        result, report = analyze(options.out_dir, not options.no_diagnostics)
    except AssertionError as e:
        print(f"\njustin_lifejacket: an input check of lifejacket failed:\n{e}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 -- reported, and the exit status says it failed
        traceback.print_exc()
        print("\njustin_lifejacket: the analysis did not run to its end", file=sys.stderr)
        return 1
    for line in describe(result, report):
        print(line)
    print(f"  lifejacket took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
