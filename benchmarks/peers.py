"""lvbench against its peers, side by side in one process, on identical weights and points.

On the IWAE paper's VAE (784-200-200-50, tanh, Bernoulli; points simulated from it), for each k:
  - lvbench ``iwae`` vs a hand-written JAX IWAE (``jax.jit``, ``lax.map`` over chunks of samples, one
    compiled function per shape; compile time reported apart), NumPyro ``RenyiELBO(alpha=0)`` (jit) and
    Pyro ``RenyiELBO(alpha=0, vectorize_particles=True)``; interleaved rounds, the minimum of each;
  - the same for ``importance`` (JAX: the IWAE function, the same number), ``elbo`` (JAX: the mean of
    the log-weights) and ``naive_mc`` (JAX: z from the prior);
  - the values: Σ_n IWAE_k from lvbench and JAX over repeated runs, their difference in standard errors;
  - FLOP rates: the decoder's 2·(50·200 + 200·200 + 200·784) = 413,600 FLOP per sample and point, over
    the time of each implementation, against the best sgemm rate measured on this machine (the faster of
    torch.mm and oneDNN; both are printed);
  - gradients: one reparameterized IWAE gradient (and DReG) at k = 100 over the points, lvbench's
    surrogate + backward vs ``jax.grad`` of the JAX IWAE objective.
The peers are optional (``pip install -e ".[peers]"``: jax, jaxlib, numpyro, pyro-ppl); each missing one
is skipped with a message.

    python benchmarks/peers.py                       # k = 1000 and 5000, 100 points (~3 min on 2 cores)
    python benchmarks/peers.py --k 1000 --rounds 3 --json peers.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import decoder_flop, sgemm_rates  # noqa: E402
from throughput import iwae_paper_vae, pyro_comparison  # noqa: E402

import lvbench  # noqa: E402
from lvbench.experiments.execute import machine_info  # noqa: E402

#: Decoder FLOP per latent sample and point of the IWAE paper's VAE (multiply-adds counted as 2).
DECODER_FLOP = 2 * (50 * 200 + 200 * 200 + 200 * 784)
assert DECODER_FLOP == decoder_flop(iwae_paper_vae("cpu", 1)[0])
#: Samples per chunk in the JAX IWAE (the issue's hand-written baseline used 10).
JAX_CHUNK = 10


def interleaved(fns: dict, rounds: int) -> dict[str, float]:
    """Minimum wall time of each callable over ``rounds`` interleaved rounds, after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def jax_mlp(layers, h):
    """The torch MLP's forward in JAX: tanh between (weight, bias) layers, none after the last."""
    import jax.numpy as jnp

    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = jnp.tanh(h)
    return h


def jax_vae(model):
    """The torch VAE's weights as JAX arrays, and jitted IWAE/ELBO/naive-MC and an IWAE gradient."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    def layers(seq):
        return [
            (jnp.asarray(m.weight.detach().numpy().T), jnp.asarray(m.bias.detach().numpy()))
            for m in seq
            if hasattr(m, "weight")
        ]

    params = {"enc": layers(model.encoder.net), "dec": layers(model.decoder)}
    latent = model.latent_dim
    log2pi = math.log(2 * math.pi)

    def log_lik(p, x, z):  # Σ_d x_d l_d - softplus(l_d), z [c, N, L]
        logits = jax_mlp(p["dec"], z)
        return (x * logits - jax.nn.softplus(logits)).sum(-1)

    def log_weights(p, x, key, c, proposal):
        out = jax_mlp(p["enc"], x)
        mu, log_var = out[:, :latent], out[:, latent:]
        eps = jax.random.normal(key, (c, *mu.shape))
        log_prior_term = lambda z: -0.5 * (z**2).sum(-1) - 0.5 * latent * log2pi  # noqa: E731
        if proposal == "prior":
            return log_lik(p, x, eps)
        z = mu + jnp.exp(0.5 * log_var) * eps
        log_q = -0.5 * (eps**2).sum(-1) - 0.5 * log_var.sum(-1) - 0.5 * latent * log2pi
        return log_prior_term(z) + log_lik(p, x, z) - log_q

    def chunked(p, x, key, k, proposal):  # [k, N] log-weights, JAX_CHUNK samples per lax.map step
        keys = jax.random.split(key, k // JAX_CHUNK)
        lw = jax.lax.map(lambda kk: log_weights(p, x, kk, JAX_CHUNK, proposal), keys)
        return lw.reshape(-1, x.shape[0])

    def iwae(p, x, key, k):
        return logsumexp(chunked(p, x, key, k, "encoder"), axis=0) - math.log(k)

    def elbo(p, x, key, k):
        return chunked(p, x, key, k, "encoder").mean(0)

    def naive(p, x, key, k):
        return logsumexp(chunked(p, x, key, k, "prior"), axis=0) - math.log(k)

    def iwae_objective(p, x, key, k):  # the mean over points, as lvbench's surrogates
        lw = log_weights(p, x, key, k, "encoder")
        return (logsumexp(lw, axis=0) - math.log(k)).mean()

    fns = {
        "iwae": jax.jit(iwae, static_argnums=3),
        "importance": jax.jit(iwae, static_argnums=3),  # the same number as IWAE: log (1/k) Σ w_i, z ~ q
        "elbo": jax.jit(elbo, static_argnums=3),
        "naive_mc": jax.jit(naive, static_argnums=3),
        "grad": jax.jit(jax.grad(iwae_objective), static_argnums=3),
    }
    return params, fns


def jax_comparison(model, x, ks, rounds: int, sgemm: float) -> dict:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {"skipped": "jax is not installed (pip install -e '.[peers]')"}
    params, fns = jax_vae(model)
    xj = jnp.asarray(x.numpy())
    key = jax.random.PRNGKey(0)
    out: dict = {"jax": jax.__version__}
    for k in ks:
        row: dict = {}
        for name in ("iwae", "importance", "elbo", "naive_mc"):
            start = time.perf_counter()
            fns[name](params, xj, key, k).block_until_ready()
            row[f"{name}_jax_compile_s"] = time.perf_counter() - start
            est = lvbench.get_estimator(name)
            times = interleaved(
                {
                    "lvbench": lambda est=est, k=k: est(model, x, num_samples=k),
                    "jax": lambda name=name, k=k: fns[name](params, xj, key, k).block_until_ready(),
                },
                rounds,
            )
            row[name] = {
                "lvbench_s": times["lvbench"],
                "jax_s": times["jax"],
                "jax_over_lvbench_time": times["jax"] / times["lvbench"],
                "lvbench_gflops": DECODER_FLOP * k * x.shape[0] / times["lvbench"] / 1e9,
                "jax_gflops": DECODER_FLOP * k * x.shape[0] / times["jax"] / 1e9,
                "lvbench_sgemm_fraction": DECODER_FLOP * k * x.shape[0] / times["lvbench"] / sgemm,
                "jax_sgemm_fraction": DECODER_FLOP * k * x.shape[0] / times["jax"] / sgemm,
            }
        runs = 5
        lv = np.array(
            [lvbench.get_estimator("iwae")(model, x, num_samples=k).double().sum().item() for _ in range(runs)]
        )
        jx = np.array(
            [float(fns["iwae"](params, xj, jax.random.PRNGKey(i + 1), k).sum()) for i in range(runs)], dtype=float
        )
        se = math.sqrt(lv.var(ddof=1) / runs + jx.var(ddof=1) / runs)
        row["sum_iwae"] = {"lvbench": lv.mean(), "jax": jx.mean(), "difference_in_se": abs(lv.mean() - jx.mean()) / se}
        out[f"k={k}"] = row
    out["gradient k=100"] = gradient_comparison(model, x, params, fns, xj, key, rounds)
    return out


def gradient_comparison(model, x, params, fns, xj, key, rounds: int, k: int = 100) -> dict:
    """One reparameterized IWAE gradient (and DReG) over the points: lvbench surrogate + backward vs jax.grad."""
    parameters = [p for p in model.parameters() if p.requires_grad]

    def lv(name):
        def one():
            surrogate = lvbench.get_estimator(name)(model, x, num_samples=k, objective="iwae")
            torch.autograd.grad(surrogate, parameters)

        return one

    times = interleaved(
        {
            "lvbench reparam": lv("reparam"),
            "lvbench dreg": lv("dreg"),
            "jax.grad": lambda: __import__("jax").block_until_ready(fns["grad"](params, xj, key, k)),
        },
        rounds,
    )
    return {
        **{f"{n}_s": t for n, t in times.items()},
        "jax_over_lvbench_reparam": times["jax.grad"] / times["lvbench reparam"],
    }


def numpyro_comparison(model, x, k: int, rounds: int) -> dict:
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as ndist
        from numpyro.infer import RenyiELBO
    except ImportError:
        return {"skipped": "numpyro is not installed (pip install -e '.[peers]')"}
    params, _ = jax_vae(model)
    latent = model.latent_dim

    def np_model(data):
        with numpyro.plate("data", data.shape[0]):
            z = numpyro.sample("z", ndist.Normal(jnp.zeros(latent), 1.0).to_event(1))
            numpyro.sample("x", ndist.Bernoulli(logits=jax_mlp(params["dec"], z)).to_event(1), obs=data)

    def np_guide(data):
        out = jax_mlp(params["enc"], data)
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("z", ndist.Normal(out[:, :latent], jnp.exp(0.5 * out[:, latent:])).to_event(1))

    renyi = RenyiELBO(alpha=0, num_particles=k)
    xj = jnp.asarray(x.numpy())
    loss = jax.jit(lambda key: renyi.loss(key, {}, np_model, np_guide, xj))
    start = time.perf_counter()
    loss(jax.random.PRNGKey(0)).block_until_ready()
    compile_s = time.perf_counter() - start
    iwae = lvbench.get_estimator("iwae")
    times = interleaved(
        {
            "lvbench": lambda: iwae(model, x, num_samples=k),
            "numpyro": lambda: loss(jax.random.PRNGKey(1)).block_until_ready(),
        },
        rounds,
    )
    return {
        "numpyro_s": times["numpyro"],
        "lvbench_s": times["lvbench"],
        "compile_s": compile_s,
        "numpyro_over_lvbench_time": times["numpyro"] / times["lvbench"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--k", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["jax", "numpyro", "pyro"])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, x = iwae_paper_vae("cpu", args.points)
    rates = sgemm_rates()
    sgemm = max(rates.values())
    results: dict = {
        "machine": machine_info(),
        "load_average_at_start": os.getloadavg(),
        "threads": args.threads,
        "points": args.points,
        "sgemm_gflops": sgemm / 1e9,
        "sgemm_gflops_by_library": {name: rate / 1e9 for name, rate in rates.items()},
        "decoder_flop_per_sample": DECODER_FLOP,
    }
    by_library = ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in rates.items())
    print(f"sgemm: best {sgemm / 1e9:.1f} GFLOP/s ({by_library}) with {args.threads} threads; load {os.getloadavg()}")
    if "jax" not in args.skip:
        results["jax"] = jax_comparison(model, x, args.k, args.rounds, sgemm)
        print("JAX:", json.dumps(results["jax"], indent=1))
    for k in args.k:
        if "numpyro" not in args.skip:
            results[f"numpyro k={k}"] = numpyro_comparison(model, x, k, args.rounds)
            print(f"NumPyro k={k}:", json.dumps(results[f"numpyro k={k}"]))
        if "pyro" not in args.skip:
            results[f"pyro k={k}"] = pyro_comparison(model, x, k, "cpu", args.rounds)
            print(f"Pyro k={k}:", json.dumps(results[f"pyro k={k}"]))
    results["load_average_at_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
