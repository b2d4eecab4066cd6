"""The LearningLoss++ analysis: true per-image losses as Gamma(k, Θ) with integer shape k.

Facts from the LearningLoss++ poster (Shukla, CVPR-W 2021; ``docs/acquirers.md``, the two papers in formulas): true losses
follow a Gamma distribution, two images' losses are often close, and the LL++ gradient with
respect to a predicted loss is ``q_i − p_i`` (``p`` = the pair's normalised true losses, ``q`` =
softmax of the predicted pair), while Learning Loss's is a constant (±1) whenever its margin
is violated. The closed forms below are derived here; lengths are in units of Θ, ``d = δ/Θ``.

**P(|X − Y| ≤ δ)**, X, Y iid Gamma(k, 1). For integer k the survival function is a Poisson sum,
``P(Y > y) = Q(k, y) = e^{−y} Σ_{i<k} y^i/i!``. Then ``P(Y > X + d) = E_X[Q(k, X + d)]``; expanding
``(x + d)^m`` and integrating ``x^{k−1+j} e^{−2x}`` term by term and regrouping by ``j`` gives
``P(Y − X > d) = Σ_{j=0}^{k−1} C(k−1+j, j) 2^{−(k+j)} Q(k − j, d)`` — negative-binomial weights
times Poisson tails — and by symmetry ``P(|X − Y| ≤ d) = 1 − 2 P(Y − X > d)``
(k = 1: ``1 − e^{−d}``).

**E[p_i | y − x = δ]**, the pair (x = l_i, y = l_j = x + δ). Given ``y − x = d``, x has density
``∝ x^{k−1}(x + d)^{k−1} e^{−2x}`` on x > 0, and ``p_i = x/(2x + d) = ½ − (d/2)/(2x + d)``.
Write ``1/(2x + d) = ∫_0^∞ e^{−t(2x+d)} dt``, expand ``(x + d)^{k−1}`` and integrate x first:
with ``a_j = C(k−1, j) d^{k−1−j} (k−1+j)! 2^{−(k+j)}`` the normaliser is ``Σ_j a_j`` and
``E[1/(2x + d)] = Σ_j a_j e^{d} E_{k+j}(d) / Σ_j a_j`` (``E_n`` the generalised exponential
integral, ``∫_0^∞ e^{−td}(1+t)^{−n} dt = e^{d} E_n(d)``). So
``E[p_i | δ] = ½ − (d/2) Σ_j a_j e^{d}E_{k+j}(d) / Σ_j a_j``: ½ at δ = 0, falling towards 0.
All terms are positive (no cancellation). LL++'s gradient on ``l̂_i`` is ``q_i − E[p_i | δ]``;
Learning Loss's is ``LEARNING_LOSS_GRADIENT`` for every δ (ties included, as in Yoo & Kweon's
code, which maps a zero loss difference to −1), until the predicted gap exceeds the margin ξ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from hourglass.errors import AlposeError

K_MAX = 10_000  # largest shape accepted (the sums are O(k) per δ)

# The poster's Table 1: δ -> P(|X − Y| ≤ δ) for its fitted Gamma (docs/acquirers.md).
POSTER_TABLE1: tuple[tuple[float, float], ...] = (
    (0.02, 0.094),
    (0.04, 0.185),
    (0.06, 0.274),
    (0.08, 0.358),
    (0.1, 0.437),
    (0.125, 0.527),
    (0.15, 0.607),
)
P_CLOSE_DELTAS: tuple[float, ...] = tuple(d for d, _ in POSTER_TABLE1)
COEFFICIENT_DELTAS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(11))  # 0 … 0.5
# |∂L/∂l̂_i| of Learning Loss (Yoo & Kweon 2019) while the margin is violated, for any δ.
LEARNING_LOSS_GRADIENT = 1.0


@dataclass(frozen=True)
class GammaFit:
    """A fitted Gamma(k, Θ): integer shape, scale, and how it was obtained."""

    k: int
    theta: float
    method: str  # "mle" (samples), "table" (least squares on a P-close table) or "given"
    n: int = 0  # samples or table rows used
    score: float = float("nan")  # mean log-likelihood (mle) or residual sum of squares (table)

    @property
    def mean(self) -> float:
        return self.k * self.theta


def check_gamma(k: object, theta: object) -> tuple[int, float]:
    """Validated (k, Θ): k an integer in 1..K_MAX, Θ a finite positive number; else AlposeError."""
    try:
        k_float = float(k)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        k_float = float("nan")
    if not (k_float.is_integer() and 1 <= k_float <= K_MAX):
        raise AlposeError(
            f"k must be a whole number from 1 to {K_MAX} (the analysis assumes an integer "
            f"Gamma shape), got {k}"
        )
    try:
        theta_f = float(theta)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        theta_f = float("nan")
    if not (math.isfinite(theta_f) and theta_f > 0):
        raise AlposeError(f"theta (the Gamma scale) must be a positive number, got {theta}")
    return int(k_float), theta_f


def _scaled_deltas(delta: object, theta: float) -> np.ndarray:
    d = np.asarray(delta, dtype=np.float64) / theta
    if np.any(d < 0) or not np.all(np.isfinite(d)):
        raise AlposeError("δ must be finite and non-negative")
    return d


def p_close(delta: object, k: int, theta: float) -> np.ndarray:
    """P(|X − Y| ≤ δ) for X, Y iid Gamma(k, Θ), integer k (closed form; module docstring)."""
    k, theta = check_gamma(k, theta)
    d = _scaled_deltas(delta, theta)
    j = np.arange(k, dtype=np.float64)
    log_w = (
        special.gammaln(k + j) - special.gammaln(k) - special.gammaln(j + 1) - (k + j) * math.log(2)
    )
    tail = special.gammaincc(k - j, d[..., None])  # Q(k − j, d): finite Poisson sums
    return np.clip(1.0 - 2.0 * (np.exp(log_w) * tail).sum(-1), 0.0, 1.0)


def _exp_expn(n: np.ndarray, x: np.ndarray) -> np.ndarray:
    """e^x E_n(x) for integer n ≥ 1 and x > 0, without overflow (continued fraction for x > 1)."""
    n, x = np.broadcast_arrays(np.asarray(n, np.float64), np.asarray(x, np.float64))
    out = np.empty(n.shape)
    small = x <= 1.0
    out[small] = np.exp(x[small]) * special.expn(n[small].astype(int), x[small])
    if (~small).any():  # modified Lentz on E_n's continued fraction (converges fast for x > 1)
        nn, xx = n[~small], x[~small]
        b = xx + nn
        c = np.full_like(b, 1e300)
        dd = 1.0 / b
        h = dd.copy()
        for i in range(1, 10_000):
            an = -i * (nn - 1 + i)
            b = b + 2.0
            dd = 1.0 / (an * dd + b)
            c = b + an / c
            step = c * dd
            h *= step
            if np.all(np.abs(step - 1.0) < 1e-16):
                break
        out[~small] = h
    return out


def ll_pp_coefficient(delta: object, k: int, theta: float) -> np.ndarray:
    """E[p_i | l_j − l_i = δ] for iid Gamma(k, Θ) true losses: LL++'s gradient is q_i minus it."""
    k, theta = check_gamma(k, theta)
    d = _scaled_deltas(delta, theta)
    out = np.full(d.shape, 0.5)
    pos = d > 0
    if pos.any():
        dp = d[pos][:, None]
        j = np.arange(k, dtype=np.float64)
        log_a = (
            special.gammaln(k)
            - special.gammaln(j + 1)
            - special.gammaln(k - j)
            + (k - 1 - j) * np.log(dp)
            + special.gammaln(k + j)
            - (k + j) * math.log(2)
        )
        w = np.exp(log_a - log_a.max(-1, keepdims=True))
        mean_inv = (w * _exp_expn(k + j, dp)).sum(-1) / w.sum(-1)
        out[pos] = 0.5 - 0.5 * d[pos] * mean_inv
    return out


def _loglik(k: int, mean: float, mean_log: float) -> float:
    """Mean log-likelihood of Gamma(k, Θ = mean/k) (Θ's maximum-likelihood value given k)."""
    theta = mean / k
    return (k - 1) * mean_log - k - k * math.log(theta) - math.lgamma(k)


def fit_gamma_mle(samples: object) -> GammaFit:
    """Maximum-likelihood Gamma with integer k: Θ = mean/k; the log-likelihood is concave in k,
    so the best integer is next to the continuous optimum (ln k − ψ(k) = ln mean − mean ln x)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise AlposeError(
            f"a Gamma fit needs at least 2 finite positive losses, got {x.size} "
            f"({int(np.sum(~(x > 0)))} not positive)"
        )
    mean, mean_log = float(x.mean()), float(np.log(x).mean())
    s = math.log(mean) - mean_log
    if s <= 1e-15:
        raise AlposeError("all losses are equal; a Gamma distribution cannot be fitted to them")
    k_cont = optimize.brentq(lambda k: math.log(k) - special.digamma(k) - s, 1e-12, 1e15)
    if k_cont > K_MAX + 1:
        raise AlposeError(
            f"the losses barely vary (mean {mean:.4g}, sd {x.std():.3g}: Gamma shape ≈ "
            f"{k_cont:.3g} > {K_MAX}); is the model untrained? Analyse a later cycle or a "
            "trained run, or give --k and --theta"
        )
    candidates = {max(1, math.floor(k_cont)), max(1, math.ceil(k_cont))}
    candidates = {min(c, K_MAX) for c in candidates}
    k = max(candidates, key=lambda c: _loglik(c, mean, mean_log))
    return GammaFit(k, mean / k, "mle", int(x.size), _loglik(k, mean, mean_log))


def fit_gamma_table(
    table: tuple[tuple[float, float], ...] = POSTER_TABLE1, ks: Iterable[int] = range(1, 51)
) -> GammaFit:
    """Integer k (among ``ks``) and Θ minimising the squared error of ``p_close`` on a δ → P table."""
    deltas = np.array([d for d, _ in table], np.float64)
    values = np.array([v for _, v in table], np.float64)
    best: GammaFit | None = None
    for k in ks:
        res = optimize.minimize_scalar(
            lambda lt, k=k: float(((p_close(deltas, k, math.exp(lt)) - values) ** 2).sum()),
            bounds=(math.log(deltas.min()) - 10, math.log(deltas.max()) + 10),
            method="bounded",
            options={"xatol": 1e-12},
        )
        if best is None or res.fun < best.score:
            best = GammaFit(k, math.exp(res.x), "table", len(table), float(res.fun))
    if best is None:
        raise AlposeError("no candidate shapes k to fit the table with")
    return best
