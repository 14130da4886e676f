"""Side-by-side throughput of lvbench's hot paths, measured in one run on one machine, printed as ratios.

On the IWAE paper's VAE (784-200-200-50, tanh, Bernoulli), with MNIST-size binary points simulated
from the model (speed does not depend on training):
  1. the decoder's bare forward pass over the same N·k latents vs lvbench's IWAE (target >= 0.6);
  2. lvbench's IWAE vs Pyro's RenyiELBO(alpha=0, vectorize_particles=True) (target >= 2x), values agreeing;
  3. R = 200 gradients for the analysis, vectorized (torch.func.vmap) vs a loop of backward passes (target >= 3x);
  4. IWAE at k = 5000 over 1000 points: peak memory flat in k.

    python benchmarks/throughput.py                 # all four on CPU (about 2 minutes on 2 cores)
    python benchmarks/throughput.py --device cuda --points 10000 --k 5000
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import time

import torch

import lvbench
from lvbench.analysis.gradient_analysis import draw_gradients
from lvbench.compute.measure import PeakMemory, sync
from lvbench.experiments.execute import machine_info
from lvbench.models import VAE


def side_by_side(a, b, device, repeats: int) -> tuple[float, float]:
    """Minimum wall times of ``a`` and ``b``, called alternately ``repeats`` times each after a warm-up
    (synchronised on CUDA), so that drifts of the machine's speed hit both alike."""
    a(), b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((a, times[0]), (b, times[1])):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def iwae_paper_vae(device: str, points: int, seed: int = 0) -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(seed)
    model = VAE(784, 50, (200, 200), "tanh", "bernoulli").to(device)
    x, _ = model.sample(points)
    return model, x


def decoder_ratio(model, x, k: int, device: str, repeats: int) -> dict:
    iwae = lvbench.get_estimator("iwae")
    z = torch.randn(k, x.shape[0], model.latent_dim, device=device)

    def decoder() -> None:
        with torch.inference_mode():
            model.decoder(z)

    t_decoder, t_iwae = side_by_side(decoder, lambda: iwae(model, x, num_samples=k), device, repeats)
    return {"decoder_s": t_decoder, "iwae_s": t_iwae, "ratio": t_decoder / t_iwae, "target": ">= 0.6"}


def pyro_comparison(model, x, k: int, device: str, repeats: int) -> dict:
    try:
        import pyro
        import pyro.distributions as dist
        from pyro.infer import RenyiELBO
    except ImportError:
        return {"skipped": "pyro-ppl is not installed (pip install 'lvbench[pyro]')"}

    def pyro_model(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(50, device=device), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=model.decoder(z)).to_event(1), obs=data)

    def pyro_guide(data):
        with pyro.plate("data", data.shape[0]):
            q = model.encoder(data)
            pyro.sample("z", dist.Normal(q.base_dist.loc, q.base_dist.scale).to_event(1))

    renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True)
    iwae = lvbench.get_estimator("iwae")
    t_pyro, t_lv = side_by_side(
        lambda: renyi.loss(pyro_model, pyro_guide, x), lambda: iwae(model, x, num_samples=k), device, repeats
    )
    # values: Σ_n IWAE_k(x_n) from both, each repeated, compared within their Monte Carlo error
    pyro_values = torch.tensor([-renyi.loss(pyro_model, pyro_guide, x) for _ in range(5)], dtype=torch.float64)
    lv_values = torch.stack([iwae(model, x, num_samples=k).double().sum() for _ in range(5)])
    se = math.sqrt(pyro_values.var().item() / 5 + lv_values.var().item() / 5)
    return {
        "pyro_s": t_pyro,
        "lvbench_s": t_lv,
        "speedup": t_pyro / t_lv,
        "target": ">= 2",
        "pyro_sum_iwae": pyro_values.mean().item(),
        "lvbench_sum_iwae": lv_values.mean().item(),
        "difference_in_se": abs(pyro_values.mean().item() - lv_values.mean().item()) / se,
    }


def gradient_draws(model, x, k: int, repeats: int, estimators=("reparam", "dreg"), objective="iwae") -> dict:
    """Seconds per gradient for R draws: vmap-vectorized (the library's default batch, from the memory
    budget) vs a loop of backward passes, and the ratio; a first vmap call warms the transform up."""
    draw_gradients(model, x, estimators[0], k, 2, objective, vectorize=True)
    out = {}
    for estimator in estimators:
        torch.manual_seed(0)
        vec = draw_gradients(model, x, estimator, k, repeats, objective, vectorize=True)
        torch.manual_seed(0)
        loop = draw_gradients(model, x, estimator, k, repeats, objective, vectorize=False)
        torch.manual_seed(0)
        auto = draw_gradients(model, x, estimator, k, repeats, objective, vectorize="auto")
        out[f"{estimator}-{objective}-k{k}"] = {
            "vmap_s_per_gradient": vec.seconds_per_gradient,
            "vmap_batch": vec.batch,
            "loop_s_per_gradient": loop.seconds_per_gradient,
            "auto_s_per_gradient": auto.seconds_per_gradient,
            "auto_method": auto.method,
            "vmap_speedup": loop.seconds_per_gradient / vec.seconds_per_gradient,
            "auto_speedup": loop.seconds_per_gradient / auto.seconds_per_gradient,
        }
    return out


def toy_gradient_draws(repeats: int) -> dict:
    """The runner's gradient studies: the default suite's toy models with 32 points."""
    lg = lvbench.get_model("linear_gaussian")(data_dim=10, latent_dim=3)
    mix = lvbench.get_model("gaussian_mixture")(data_dim=2, components=3)
    x_lg, _ = lg.sample(32)
    x_mix, _ = mix.sample(32)
    return {
        "linear_gaussian 10x3": {
            **gradient_draws(lg, x_lg, 10, repeats, ("reparam", "dreg"), "iwae"),
            **gradient_draws(lg, x_lg, 10, repeats, ("score_function",), "elbo"),
        },
        "gaussian_mixture 2x3": gradient_draws(mix, x_mix, 10, repeats, ("score_function_loo", "vimco"), "iwae"),
    }


def _iwae_peak_memory(device: str, points: int, k: int) -> dict:
    """In a fresh process, so that no earlier allocation hides this one's: peak extra memory of one IWAE."""
    model, x = iwae_paper_vae(device, points, seed=1)
    iwae = lvbench.get_estimator("iwae")
    sync(device)
    start = time.perf_counter()
    with PeakMemory(device) as mem:
        iwae(model, x, num_samples=k)
        sync(device)
    return {"peak_extra_mb": mem.mb, "seconds": time.perf_counter() - start}


def flat_memory(device: str, points: int, ks: tuple[int, ...]) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        return {k: pool.apply(_iwae_peak_memory, (device, points, k)) for k in ks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gradient-k", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--gradient-repeats", type=int, default=200)
    parser.add_argument("--memory-points", type=int, default=1000)
    parser.add_argument("--memory-k", type=int, nargs="+", default=[50, 500, 5000])
    parser.add_argument("--skip", nargs="*", default=[], choices=["decoder", "pyro", "gradients", "memory"])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    results = {
        "machine": machine_info(),
        "python": platform.python_version(),
        "device": args.device,
        "points": args.points,
        "k": args.k,
    }
    model, x = iwae_paper_vae(args.device, args.points)
    if "decoder" not in args.skip:
        results["decoder_vs_iwae"] = decoder_ratio(model, x, args.k, args.device, args.repeats)
        print("decoder / IWAE time:", json.dumps(results["decoder_vs_iwae"]))
    if "pyro" not in args.skip:
        results["pyro"] = pyro_comparison(model, x, args.k, args.device, args.repeats)
        print("Pyro RenyiELBO / lvbench IWAE time:", json.dumps(results["pyro"]))
    if "gradients" not in args.skip:
        results["gradients"] = {
            "iwae-paper VAE": {
                name: value
                for k in args.gradient_k
                for name, value in gradient_draws(model, x, k, args.gradient_repeats).items()
            },
            **toy_gradient_draws(args.gradient_repeats),
        }
        print("R gradients, loop / vmap time:", json.dumps(results["gradients"]))
    if "memory" not in args.skip:
        results["memory"] = flat_memory(args.device, args.memory_points, tuple(args.memory_k))
        print(f"IWAE peak extra memory over {args.memory_points} points:", json.dumps(results["memory"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
