"""Closed forms written independently of lvbench, in numpy/scipy, that tests compare against."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats
from scipy.special import logsumexp


def lg_log_marginal(x, W, b, sigma):
    cov = W @ W.T + sigma**2 * np.eye(W.shape[0])
    return np.atleast_1d(stats.multivariate_normal(mean=b, cov=cov).logpdf(x))


def lg_posterior(x, W, b, sigma):
    """Mean [N, L] and covariance [L, L] of p(z|x) via Bayes' rule for Gaussians (scipy-free algebra)."""
    L = W.shape[1]
    cov = np.linalg.inv(np.eye(L) + W.T @ W / sigma**2)
    mean = (x - b) @ W @ cov / sigma**2
    return mean, cov


def lg_elbo(x, W, b, sigma, A, c, log_s):
    """E_q[log N(x; Wz+b, σ²I)] + E_q[log N(z; 0, I)] + H[q] for q = N(Ax+c, diag e^{2 log_s}), per point."""
    D, L = W.shape
    m = x @ A.T + c
    s2 = np.exp(2 * log_s)
    resid = x - m @ W.T - b
    e_loglik = -0.5 * D * np.log(2 * np.pi * sigma**2) - (np.sum(resid**2, 1) + s2 @ np.sum(W**2, 0)) / (2 * sigma**2)
    e_logprior = -0.5 * L * np.log(2 * np.pi) - 0.5 * (np.sum(m**2, 1) + s2.sum())
    entropy = 0.5 * L * np.log(2 * np.pi * np.e) + log_s.sum()
    return e_loglik + e_logprior + entropy


def gmm_component_loglik(x, means, stds):
    return np.stack([stats.norm(means[c], stds[c]).logpdf(x).sum(-1) for c in range(len(means))], -1)


def gmm_log_marginal(x, logits, means, stds):
    log_pi = logits - logsumexp(logits)
    return logsumexp(log_pi + gmm_component_loglik(x, means, stds), axis=-1)


def mlp_logits(x, layers):
    """tanh MLP: layers is a list of (weight, bias) pairs."""
    h = x
    for i, (w, bias) in enumerate(layers):
        h = h @ w.T + bias
        if i < len(layers) - 1:
            h = np.tanh(h)
    return h


def gmm_objective(x, logits, means, stds, enc_layers, objective, k=1):
    """Exact ELBO or IWAE-k of a GMM with an MLP categorical encoder, by enumeration, per point."""
    log_pi = logits - logsumexp(logits)
    q_logits = mlp_logits(x, enc_layers)
    log_q = q_logits - logsumexp(q_logits, axis=-1, keepdims=True)
    lw = log_pi + gmm_component_loglik(x, means, stds) - log_q  # [N, C]
    C = len(logits)
    if objective == "elbo":
        return np.sum(np.exp(log_q) * lw, -1)
    total = 0.0
    for tup in itertools.product(range(C), repeat=k):
        tup = list(tup)
        total = total + np.exp(log_q[:, tup].sum(-1)) * (logsumexp(lw[:, tup], axis=-1) - np.log(k))
    return total


def central_difference(f, params: dict[str, np.ndarray], h: float = 1e-6) -> dict[str, np.ndarray]:
    """∂f/∂p for every entry of every array in ``params`` (f takes the dict, returns a scalar)."""
    grads = {}
    for name, value in params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            old = value[idx]
            value[idx] = old + h
            up = f(params)
            value[idx] = old - h
            down = f(params)
            value[idx] = old
            g[idx] = (up - down) / (2 * h)
        grads[name] = g
    return grads


def gaussian_renyi_divergence(mu1, cov1, mu2, cov2, alpha):
    """D_α(N(μ1, Σ1) ‖ N(μ2, Σ2)) in closed form (Gil, Alajaji & Linder 2013), with
    Σ_α = α Σ2 + (1 - α) Σ1 positive definite; ∫ f1^α f2^(1-α) = exp((α - 1) D_α)."""
    cov_a = alpha * cov2 + (1 - alpha) * cov1
    diff = mu1 - mu2
    quad = 0.5 * alpha * diff @ np.linalg.solve(cov_a, diff)
    _, logdet_a = np.linalg.slogdet(cov_a)
    _, logdet1 = np.linalg.slogdet(cov1)
    _, logdet2 = np.linalg.slogdet(cov2)
    return quad - (logdet_a - (1 - alpha) * logdet1 - alpha * logdet2) / (2 * (alpha - 1))
