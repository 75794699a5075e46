"""P(action = 1) of one decision under JustIn's `thompson` (lifejacket's action_prob_func).

thompson models the reward as r = x'b + a·x'g + noise with a Gaussian posterior over
theta = [b; g] and treats with probability P(x'g > 0) = Phi(x'm_g / sqrt(x'S_gg x)), clipped
to [lo, hi]. Its analysis parameter vector beta holds the posterior mean m (k = 2d numbers)
and then the lower triangle of L, row by row, where L L' is the posterior precision P = S^-1
and L's diagonal is stored as its logarithm (so every beta is a valid precision).

Decisions the policy did not draw (unavailable ones, warm-up, fallback and the study server's
own decisions, drawn_by_policy = 0) get the recorded probability back, which does not depend
on beta; an unavailable decision (available = 0) gets 0 times that.
"""

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

jax.config.update("jax_enable_x64", True)


def _unpack(beta, k):
    """The posterior mean (k) and the Cholesky factor L (k x k) of the precision."""
    mean = beta[:k]
    rows, cols = jnp.tril_indices(k)
    lower = jnp.zeros((k, k), dtype=beta.dtype).at[rows, cols].set(beta[k:])
    diagonal = jnp.diag(lower)
    factor = lower - jnp.diag(diagonal) + jnp.diag(jnp.exp(diagonal))
    return mean, factor


def thompson_action1_prob(beta, x, bounds, available, drawn_by_policy, recorded_prob):
    beta = jnp.asarray(beta, dtype=jnp.float64)
    x = jnp.asarray(x, dtype=jnp.float64).reshape(-1)
    d = x.shape[0]
    k = 2 * d
    mean, factor = _unpack(beta, k)
    # The covariance's treatment block, from the precision's factor: S = (L L')^-1.
    identity = jnp.eye(k, dtype=beta.dtype)
    covariance = jax.scipy.linalg.cho_solve((factor, True), identity)
    location = jnp.dot(x, mean[d:])
    variance = x @ covariance[d:, d:] @ x
    drawn = jnp.clip(norm.cdf(location / jnp.sqrt(variance)), bounds[0], bounds[1])
    return available * (drawn_by_policy * drawn + (1.0 - drawn_by_policy) * recorded_prob)
