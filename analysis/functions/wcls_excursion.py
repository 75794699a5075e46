"""The default inference: the marginal causal excursion effect of action 1, estimated by
weighted and centred least squares (WCLS; Boruvka et al. 2018, JASA 113:1112).

theta = [alpha, effect]. One participant's estimating function sums, over their in-study
decision times t,

    available_t * observed_t * W_t * (reward_t - alpha - (action_t - p~) * effect)
        * [1, action_t - p~]

with p~ = 0.5 a fixed reference probability and W_t = p~^a (1 - p~)^(1 - a) /
(p_t^a (1 - p_t)^(1 - a)) the weight that turns the recorded policy's probability p_t of the
action taken into the reference one. `effect` is then the mean difference in reward between
action 1 and action 0 over available decision times (the excursion from the policy at one
time), whatever the policy did elsewhere. Unavailable times and times without a call
(available 0) and missing outcomes (observed 0) drop out. The control part here is an
intercept only, which keeps the function free of the study's covariates; adding covariate
columns to it (as parameters named like the columns) only makes the estimate more precise.

lifejacket passes each parameter but theta as the participant's in-study rows of the column of
the same name, and recomputes action1_prob from the policy parameters (which is how the
adaptivity enters the standard errors).
"""

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

REFERENCE_PROBABILITY = 0.5


def wcls_excursion(theta, action, action1_prob, reward, available, observed):
    action = jnp.asarray(action, dtype=jnp.float64).reshape(-1)
    prob = jnp.asarray(action1_prob, dtype=jnp.float64).reshape(-1)
    reward = jnp.asarray(reward, dtype=jnp.float64).reshape(-1)
    mask = (
        jnp.asarray(available, dtype=jnp.float64).reshape(-1)
        * jnp.asarray(observed, dtype=jnp.float64).reshape(-1)
    )
    reference = REFERENCE_PROBABILITY
    # The probability of the action taken, under the policy and under the reference. Rows that
    # drop out (mask 0) get a weight of 1 so that no 0/0 reaches a gradient.
    taken = action * prob + (1.0 - action) * (1.0 - prob)
    taken_reference = action * reference + (1.0 - action) * (1.0 - reference)
    weight = jnp.where(mask > 0, taken_reference / jnp.where(mask > 0, taken, 1.0), 1.0)
    centred = action - reference
    residual = reward - theta[0] - centred * theta[1]
    scale = mask * weight * residual
    return jnp.stack([jnp.sum(scale), jnp.sum(scale * centred)])
