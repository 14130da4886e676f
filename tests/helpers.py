"""Models, numpy references and assertions shared by several test modules (not tests themselves)."""

import math

import numpy as np
import torch
from reference_numpy import central_difference, gmm_log_marginal, gmm_objective, lg_elbo, lg_log_marginal

from lvbench.models import GaussianMixture, LinearGaussian


def numpy_truth(model, x):
    if isinstance(model, LinearGaussian):
        return lg_log_marginal(
            x.double().numpy(),
            model.weight.detach().double().numpy(),
            model.bias.detach().double().numpy(),
            float(model.noise_std),
        )
    return gmm_log_marginal(
        x.double().numpy(),
        model.logits.detach().double().numpy(),
        model.means.detach().double().numpy(),
        model.log_stds.exp().detach().double().numpy(),
    )


def lg_model(seed=0):
    torch.manual_seed(seed)
    m = LinearGaussian.random(3, 2, 0.8, seed=seed, dtype=torch.float64)
    with torch.no_grad():
        m.encoder.weight.normal_(0, 0.4)
        m.encoder.bias.normal_(0, 0.3)
        m.encoder.log_scale.normal_(-0.4, 0.2)
    return m


def lg_numpy_elbo_gradient(m, x):
    params = {
        "weight": m.weight.detach().numpy().copy(),
        "bias": m.bias.detach().numpy().copy(),
        "encoder.weight": m.encoder.weight.detach().numpy().copy(),
        "encoder.bias": m.encoder.bias.detach().numpy().copy(),
        "encoder.log_scale": m.encoder.log_scale.detach().numpy().copy(),
    }
    xn, sigma = x.numpy(), float(m.noise_std)

    def f(p):
        return lg_elbo(
            xn, p["weight"], p["bias"], sigma, p["encoder.weight"], p["encoder.bias"], p["encoder.log_scale"]
        ).mean()

    return central_difference(f, params)


def assert_unbiased(draws, reference: dict, z=5.0):
    """Every coordinate's mean within z standard errors of the reference (and not all trivially zero)."""
    ref = draws.vector({n: torch.as_tensor(v) for n, v in reference.items()})
    mean = draws.values.mean(0)
    se = draws.values.std(0) / math.sqrt(draws.values.shape[0])
    err = (mean - ref).abs()
    bad = err > z * se + 1e-7
    assert not bad.any(), f"max |bias|/se = {(err / se.clamp_min(1e-30)).max():.2f} at {bad.nonzero().flatten()[:5]}"
    assert se.max() > 0 or torch.allclose(mean, ref)


def gmm_model(seed=0, components=3):
    torch.manual_seed(seed)
    return GaussianMixture.random(2, components, separation=1.5, seed=seed, dtype=torch.float64)


def gmm_numpy_gradient(m, x, objective, k=1):
    names = [n for n, _ in m.named_parameters()]
    params = {n: p.detach().numpy().copy() for n, p in m.named_parameters()}
    xn = x.numpy()
    layer_names = [n for n in names if n.startswith("encoder")]

    def f(p):
        layers = [(p[layer_names[i]], p[layer_names[i + 1]]) for i in range(0, len(layer_names), 2)]
        return gmm_objective(xn, p["logits"], p["means"], np.exp(p["log_stds"]), layers, objective, k).mean()

    return central_difference(f, params)


def make_plugin_dist(root, name, entry_points):
    """An installed distribution under ``root`` (a folder to put on PYTHONPATH) whose entry points are
    ``entry_points`` (the text of entry_points.txt): what importlib.metadata finds for a pip-installed
    plugin."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
