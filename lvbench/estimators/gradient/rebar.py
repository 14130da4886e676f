"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018): unbiased gradients for Bernoulli
latents with a control variate built from a continuous relaxation.

With logits α of q(z|x), logistic noise z = α + logit(u) gives the sample b = H(z) = 1[z > 0], and
z̃ = α + logit(ũ) a second draw of the same noise conditioned on b (ũ uniform on (1-σ(α), 1) where
b = 1, on (0, 1-σ(α)) where b = 0). For a control c(z) (over all k·L noises of the k samples),

    ĝ_α = [f(b) - c(z̃)] ∇_α log q(b) + ∇_α c(z) - ∇_α c(z̃)

is unbiased for ∇_α E_q[f(b)] whatever c is, since z and z̃ share their distribution (the last two
terms cancel in expectation), and b, z̃ are reparameterized given (u, v).
- REBAR: c(z) = η f(σ(z/λ)), the objective at the Concrete relaxation, scale η and temperature λ.
- RELAX: c(z) = η f(σ(z/λ)) + Σ_i r_ψ(σ(z_i/λ), x), plus a free network r_ψ (one tanh hidden layer).
For IWAE_k, f is the objective of all k samples and c a control of the joint noise. The ELBO_k =
(1/k) Σ_i f(b_i) splits over samples, so each sample is credited with its own term: the estimate is the
mean over i of the single-sample estimator with c_i(z_i) = η f(σ(z_i/λ)) [+ r_ψ(σ(z_i/λ), x)], whose φ
variance falls like 1/k (crediting every sample with the whole ELBO_k, as before version 0.4, is unbiased
too, but its variance barely falls with k). Inside c the model's parameters and q's logits are held
constant, so c carries gradient only through the noise. θ's gradient is ∇_θ f(b)
(for IWAE φ also keeps the direct path through log q(b), as ARM and DisARM do). The control's
parameters (η, log λ and ψ) are fitted before the study by Adam on the sum of squared φ-gradient
estimates (its mean is fixed, so this minimizes their total variance, as both papers do).
"""

from __future__ import annotations

import torch
from torch import nn

from lvbench.compute.bernoulli import bernoulli_log_prob
from lvbench.core.protocol import inference_parameters
from lvbench.estimators.base import estimator
from lvbench.estimators.gradient.arm import _logits
from lvbench.estimators.gradient.common import batch_objective, detached_log_joint
from lvbench.estimators.gradient.fitted import FittedControl, fit_by_adam
from lvbench.models.base import mlp

__all__ = ["RelaxedControl", "rebar", "relax"]

#: The surrogate network's learning rate relative to η's and λ's in the fit.
NETWORK_LR = 0.1
#: Uniform draws are kept this far from 0 and 1 so that logit(u) stays finite in float32.
EPS = 1e-6


class RelaxedControl(nn.Module):
    """c(z) = η f(σ(z/λ)) [+ Σ_i r_ψ(σ(z_i/λ), x)]; the network's output layer starts at zero."""

    def __init__(self, temperature: float, eta: float, latent_dim: int, data_dim: int, hidden: int | None):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())
        self.eta = nn.Parameter(torch.tensor(float(eta)))
        self.net = None
        if hidden is not None:
            self.net = mlp([latent_dim + data_dim, hidden, 1], "tanh")
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def param_groups(self, lr: float) -> list[dict]:
        """Adam groups: η and log λ at ``lr``, the network at ``lr`` × NETWORK_LR (at ``lr`` itself its many
        weights move the surrogate far in the first steps and the fit starts by raising the variance)."""
        groups = [{"params": [self.log_temperature, self.eta], "lr": lr}]
        if self.net is not None:
            groups.append({"params": list(self.net.parameters()), "lr": lr * NETWORK_LR})
        return groups

    def forward(self, model, x: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor, objective: str) -> torch.Tensor:
        """c(z) for noise z [k, N, L]: per sample and point [k, N] for the ELBO, whose terms split over the
        samples (each sample's control sees its own noise only), per point [N] for the joint IWAE_k."""
        s = torch.sigmoid(z / self.log_temperature.exp())
        log_q = bernoulli_log_prob(s, alpha.detach())  # q's logits held constant
        relaxed = detached_log_joint(model, x, s) - log_q  # [k, N]
        net = 0.0
        if self.net is not None:
            net = self.net(torch.cat([s, x.expand(*s.shape[:-1], x.shape[-1])], -1)).squeeze(-1)
        if objective == "elbo":
            return self.eta * relaxed + net
        return self.eta * batch_objective(relaxed, objective) + (net.sum(0) if self.net is not None else 0.0)


def _noise(alpha: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, z, z̃) [k, N, L]: the sample, its logistic noise, and the noise redrawn given b."""
    shape = (k, *alpha.shape)
    u = torch.rand(shape, dtype=alpha.dtype, device=alpha.device).clamp(EPS, 1 - EPS)
    v = torch.rand(shape, dtype=alpha.dtype, device=alpha.device).clamp(EPS, 1 - EPS)
    z = alpha + torch.log(u) - torch.log1p(-u)
    b = (z > 0).to(alpha.dtype).detach()
    p0 = torch.sigmoid(-alpha)  # P(b = 0) = 1 - σ(α)
    u_cond = torch.where(b > 0, p0 + v * (1 - p0), v * p0).clamp(EPS, 1 - EPS)
    z_cond = alpha + torch.log(u_cond) - torch.log1p(-u_cond)
    return b, z, z_cond


def relaxed_surrogate(model, x: torch.Tensor, k: int, objective: str, control: RelaxedControl) -> torch.Tensor:
    """mean_x [f(b) + stopgrad_α(f(b) - c(z̃)) log q(b) + c(z) - c(z̃)]; ∇ is the REBAR/RELAX estimate.
    The coefficient of log q(b) keeps its dependence on the control's parameters (for their fit)."""
    alpha = _logits(model, x)
    b, z, z_cond = _noise(alpha, k)
    log_q_b = bernoulli_log_prob(b, alpha, summed=False)  # [k, N, L]
    if objective == "elbo":  # ELBO_k = mean_i f(b_i): each sample is credited with its own term only
        f_i = model.log_joint(x, b) - log_q_b.sum(-1).detach()  # [k, N]
        coefficient = f_i.detach() - control(model, x, alpha, z_cond.detach(), objective)
        per_sample = (
            f_i
            + coefficient * log_q_b.sum(-1)
            + control(model, x, alpha, z, objective)
            - control(model, x, alpha, z_cond, objective)
        )
        return per_sample.mean(0).mean()
    attached = objective == "iwae"  # IWAE's f depends on φ directly through log q(b)
    f_b = batch_objective(model.log_joint(x, b) - (log_q_b if attached else log_q_b.detach()).sum(-1), objective)
    coefficient = f_b.detach() - control(model, x, alpha, z_cond.detach(), objective)
    return (
        f_b
        + coefficient * log_q_b.sum((0, -1))
        + control(model, x, alpha, z, objective)
        - control(model, x, alpha, z_cond, objective)
    ).mean()


def _control(model, x: torch.Tensor, temperature: float, eta: float, hidden: int | None) -> RelaxedControl:
    latent_dim = _logits(model, x).shape[-1]
    return RelaxedControl(temperature, eta, latent_dim, x.shape[-1], hidden).to(device=x.device, dtype=x.dtype)


def fit_relaxed(model, x, k, objective, temperature, eta, fit_steps, fit_lr, hidden=None, **_) -> FittedControl:
    """REBAR's η and λ (and RELAX's surrogate network, given ``hidden``) by minimizing the φ-gradient
    variance: Adam on the summed squares of the φ-gradient estimate, whose mean the control cannot move."""
    control = _control(model, x, temperature, eta, hidden)
    phi = list(inference_parameters(model))

    def gradient_energy() -> torch.Tensor:
        grads = torch.autograd.grad(relaxed_surrogate(model, x, k, objective, control), phi, create_graph=True)
        return sum((g**2).sum() for g in grads)

    fitted = fit_by_adam(control, gradient_energy, fit_steps, fit_lr, {"objective": "sum of squared phi-gradients"})
    fitted.record.update(temperature=float(control.log_temperature.exp()), eta=float(control.eta))
    return fitted


#: What REBAR and RELAX register with: Bernoulli latents, both objectives, the one fit.
REGISTRATION = {
    "kind": "gradient",
    "needs": ("binary_latent", "encoder"),
    "properties": ("unbiased",),
    "objectives": ("elbo", "iwae"),
    "fit": fit_relaxed,
}


@estimator("rebar", **REGISTRATION)
def rebar(
    model,
    x: torch.Tensor,
    k: int,
    objective: str = "elbo",
    temperature: float = 0.5,
    eta: float = 1.0,
    fit_steps: int = 200,
    fit_lr: float = 0.01,
    control: FittedControl | None = None,
) -> torch.Tensor:
    """REBAR: score function with the relaxed objective η f(σ(z/λ)) as control variate; unbiased."""
    module = control.module if control is not None else _control(model, x, temperature, eta, None)
    return relaxed_surrogate(model, x, k, objective, module)


@estimator("relax", **REGISTRATION)
def relax(
    model,
    x: torch.Tensor,
    k: int,
    objective: str = "elbo",
    temperature: float = 0.5,
    eta: float = 1.0,
    hidden: int = 64,
    fit_steps: int = 200,
    fit_lr: float = 0.01,
    control: FittedControl | None = None,
) -> torch.Tensor:
    """RELAX: REBAR's control plus a fitted surrogate network r_ψ(σ(z/λ), x); unbiased."""
    module = control.module if control is not None else _control(model, x, temperature, eta, hidden)
    return relaxed_surrogate(model, x, k, objective, module)
