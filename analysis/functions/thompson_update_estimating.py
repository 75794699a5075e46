"""One participant's estimating function of a `thompson` update (lifejacket's alg_update_func,
type "estimating").

Every update computes the posterior afresh from the prior N(m0, S0) and all rows it read:
P = S0^-1 + Phi'Phi / s2 and m = P^-1 (S0^-1 m0 + Phi'r / s2), with Phi's rows [x, a·x]. With
beta = [m; vech-style lower triangle of L, log diagonal] (see thompson_action1_prob.py) and
n the number of participants who gave the update rows, the sum over those participants of

    [ Phi_i'(Phi_i m - r_i) / s2 + S0^-1 (m - m0) / n ;
      lower triangle, row by row, of Phi_i'Phi_i / s2 + (S0^-1 - L L') / n ]

is zero exactly at the update's beta (the first block is P m - S0^-1 m0 - Phi'r / s2, the
second the lower triangle of S0^-1 + Phi'Phi / s2 - L L').
"""

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)


def thompson_update_estimating(
    beta, xs, actions, rewards, prior_mean, prior_precision, noise_variance, n_participants
):
    beta = jnp.asarray(beta, dtype=jnp.float64)
    xs = jnp.atleast_2d(jnp.asarray(xs, dtype=jnp.float64))
    actions = jnp.asarray(actions, dtype=jnp.float64).reshape(-1)
    rewards = jnp.asarray(rewards, dtype=jnp.float64).reshape(-1)
    prior_mean = jnp.asarray(prior_mean, dtype=jnp.float64)
    prior_precision = jnp.asarray(prior_precision, dtype=jnp.float64)
    k = prior_mean.shape[0]
    mean = beta[:k]
    rows, cols = jnp.tril_indices(k)
    lower = jnp.zeros((k, k), dtype=beta.dtype).at[rows, cols].set(beta[k:])
    diagonal = jnp.diag(lower)
    factor = lower - jnp.diag(diagonal) + jnp.diag(jnp.exp(diagonal))
    phi = jnp.concatenate([xs, actions[:, None] * xs], axis=1)
    gram = phi.T @ phi / noise_variance
    mean_part = phi.T @ (phi @ mean - rewards) / noise_variance + prior_precision @ (
        mean - prior_mean
    ) / n_participants
    precision_part = gram + (prior_precision - factor @ factor.T) / n_participants
    return jnp.concatenate([mean_part, precision_part[rows, cols]])
