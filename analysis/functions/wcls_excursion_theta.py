"""theta for wcls_excursion.py (lifejacket's theta_calculation_func): the root of the summed
WCLS estimating functions over every participant's in-study rows, which is the weighted least
squares fit of reward on [1, action - 0.5] with weights available * observed * W (see
wcls_excursion.py), computed from the recorded probabilities."""

import numpy as np

REFERENCE_PROBABILITY = 0.5


def wcls_excursion_theta(analysis_df):
    rows = analysis_df[analysis_df["in_study"] == 1]
    action = rows["action"].to_numpy(dtype=np.float64)
    prob = rows["action1_prob"].to_numpy(dtype=np.float64)
    reward = rows["reward"].to_numpy(dtype=np.float64)
    mask = rows["available"].to_numpy(dtype=np.float64) * rows["observed"].to_numpy(
        dtype=np.float64
    )
    reference = REFERENCE_PROBABILITY
    taken = action * prob + (1.0 - action) * (1.0 - prob)
    taken_reference = action * reference + (1.0 - action) * (1.0 - reference)
    keep = mask > 0
    weight = np.zeros_like(mask)
    weight[keep] = taken_reference[keep] / taken[keep]
    design = np.column_stack([np.ones_like(action), action - reference])
    weighted = design * weight[:, None]
    return np.linalg.solve(weighted.T @ design, weighted.T @ reward)
