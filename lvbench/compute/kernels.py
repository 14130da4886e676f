"""Which CPU kernels the fast route runs, chosen by measuring them on this machine, not by where lvbench
was written.

Three choices, each between implementations of one function whose results differ only in rounding:

- ``linear``: an MLP layer and its activation without autograd (likelihood estimators, AIS): one oneDNN
  matmul with the bias and activation in its epilogue ("onednn", ``lvbench.compute.onednn``), or
  ``torch.addmm`` (MKL on x86 wheels) and the activation ("aten");
- ``linear_autograd``: the same with autograd recording (gradient estimators, training);
- ``bernoulli_autograd``: Σ_d log Bernoulli(x_d; σ(l_d)) with autograd: torch's fused
  ``binary_cross_entropy_with_logits`` ("bce") or ``SoftplusSum`` ("softplus_sum").

The choice is measured once per machine, thread count and torch version: a calibration of about two
seconds on the IWAE paper's decoder (784-200-200-50), timing its no-grad forward to |logits| at 4,096 rows
(a likelihood chunk) and an IWAE-5 step's forward and backward at batch 100, the contestants alternating
and each one's best taken. It is cached in ``$LVBENCH_CACHE_DIR`` (default ``~/.cache/lvbench``) as
``kernels.json``, recorded with every run (``machine_info``) and part of every CPU cell's identity
(``cpu_matmul_backend``), so numbers of two choices never mix. oneDNN ran these matmuls at twice MKL's
rate on one 2-core AMD EPYC, and slower than MKL on a 2-core Intel Xeon and on another EPYC: hence a
measurement, not a rule.

Override any of them with ``LVBENCH_KERNELS="linear=aten,bernoulli_autograd=bce"`` (the rest measured),
re-measure with ``lvbench calibrate``. Where oneDNN is unavailable or disabled both linear choices are
"aten" without measuring. Off the CPU, and on the ``eager`` route, none of this applies.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lvbench.compute.onednn import OneDNNLinear, onednn_enabled, onednn_linear
from lvbench.compute.softplus import SoftplusSum
from lvbench.compute.torch_state import torch_threads
from lvbench.core.errors import LvbenchInputError

__all__ = [
    "CHOICES",
    "ENV_VAR",
    "cache_key",
    "cache_path",
    "calibrate",
    "kernel",
    "kernel_choices",
    "kernel_report",
    "machine_key",
]

#: choice -> its candidates, the first being the default where nothing can be measured.
CHOICES: dict[str, tuple[str, ...]] = {
    "linear": ("onednn", "aten"),
    "linear_autograd": ("onednn", "aten"),
    "bernoulli_autograd": ("bce", "softplus_sum"),
}
ENV_VAR = "LVBENCH_KERNELS"
CACHE_ENV_VAR = "LVBENCH_CACHE_DIR"
#: bumped when the calibration's workload changes, so old cached choices are measured again
CALIBRATION_VERSION = 1
#: how much faster than the default a candidate must be to be chosen (a fraction of the default's time)
MARGIN = 0.05

#: (overrides, oneDNN usable, cache folder, threads) -> {"choices", "measured", "overrides"}
_states: dict[tuple, dict[str, Any]] = {}


@functools.cache
def machine_key() -> str:
    """What a cached calibration is valid for: the CPU (model name and instruction-set flags), the torch
    build and the calibration's version."""
    cpu, flags = platform.processor() or platform.machine(), ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name.strip() == "model name" and cpu in (platform.processor(), platform.machine()):
                cpu = value.strip()
            elif name.strip() == "flags" and not flags:
                flags = value.strip()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{cpu} | flags {digest} | torch {torch.__version__} | calibration {CALIBRATION_VERSION}"


def cache_key(threads: int | None = None) -> str:
    """The cache entry for ``threads`` torch threads (default the current count) on this machine."""
    return f"{machine_key()} | {threads or torch.get_num_threads()} threads"


def cache_path() -> str:
    root = os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "lvbench")
    return os.path.join(root, "kernels.json")


def _overrides() -> dict[str, str]:
    text = os.environ.get(ENV_VAR, "").strip()
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in CHOICES:
            raise LvbenchInputError(f"${ENV_VAR}: unknown kernel choice {name!r}; expected one of {list(CHOICES)}")
        if value not in CHOICES[name]:
            raise LvbenchInputError(f"${ENV_VAR}: {name} must be one of {list(CHOICES[name])}, got {value!r}")
        out[name] = value
    return out


def kernel_choices(threads: int | None = None) -> dict[str, str]:
    """The choice in force for each of ``CHOICES``: ``$LVBENCH_KERNELS``, else the cached measurement for
    this machine and thread count, else a measurement made now (and cached). ``threads``: the choice for
    that many torch threads (default: the current count), e.g. for a cell that will run with them."""
    return dict(_resolved(threads)["choices"])


def _resolved(threads: int | None) -> dict[str, Any]:
    """The choices for ``threads`` and where they came from, resolved once per process and setting."""
    threads = threads or torch.get_num_threads()
    onednn = onednn_enabled()
    key = (os.environ.get(ENV_VAR, ""), onednn, os.environ.get(CACHE_ENV_VAR), threads)
    if key not in _states:
        overrides = _overrides()
        needed = [name for name in CHOICES if name not in overrides and (onednn or not name.startswith("linear"))]
        measured = _cached_or_measured(threads) if needed else {"choices": {}}
        choices = {}
        for name, candidates in CHOICES.items():
            if name.startswith("linear") and not onednn:  # nothing to choose, whatever was asked
                choices[name] = "aten"
            elif name in overrides:
                choices[name] = overrides[name]
            else:
                choices[name] = measured["choices"].get(name, candidates[0])
        _states[key] = {"choices": choices, "measured": measured, "overrides": overrides, "threads": threads}
    return _states[key]


def kernel(name: str) -> str:
    """The implementation in force for choice ``name``."""
    return kernel_choices()[name]


def kernel_report(threads: int | None = None) -> dict[str, Any]:
    """The choices (for ``threads`` torch threads, default the current count) with where each came from
    and what was measured: for provenance."""
    state = _resolved(threads)
    measured = state["measured"]
    return {
        "choices": dict(state["choices"]),
        "overridden": sorted(state["overrides"]),
        "milliseconds": measured.get("milliseconds", {}),
        "measured_at": measured.get("measured_at"),
        "threads": measured.get("threads"),
        "machine": measured.get("machine", cache_key(state["threads"])),
    }


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_cache(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _valid(entry: Any) -> bool:
    return isinstance(entry, dict) and all(
        entry.get("choices", {}).get(name) in candidates for name, candidates in CHOICES.items()
    )


def _cached_or_measured(threads: int, force: bool = False) -> dict[str, Any]:
    path, key = cache_path(), cache_key(threads)
    try:
        with _locked(path):  # one process measures; the others wait and read its result
            cache = _read_cache(path)
            if not force and _valid(cache.get(key)):
                return cache[key]
            entry = _measure(threads)
            cache[key] = entry
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".kernels-")
            with os.fdopen(fd, "w") as fh:
                json.dump(cache, fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
            return entry
    except OSError:  # no writable cache: measure for this process alone
        return _measure(threads)


def calibrate() -> dict[str, Any]:
    """Measure the choices on this machine now (at the current thread count), replace the cached ones and
    return the report."""
    _cached_or_measured(torch.get_num_threads(), force=True)
    _states.clear()
    return kernel_report()


# -- the measurement -------------------------------------------------------------------------------
def _best_of(contestants: dict[str, Callable[[], object]], rounds: int = 7, repeats: int = 3) -> dict[str, float]:
    """Each contestant's best time in milliseconds over ``rounds`` rounds of ``repeats`` calls, the order
    alternating so neither always runs first; one warm-up call each."""
    for run in contestants.values():
        run()
    best = dict.fromkeys(contestants, math.inf)
    names = list(contestants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(repeats):
                contestants[name]()
            best[name] = min(best[name], (time.perf_counter() - start) / repeats * 1000)
    return best


def fastest(milliseconds: dict[str, float], candidates: Sequence[str]) -> str:
    """The first of ``candidates`` (the default) unless another is faster by more than ``MARGIN``; then the
    fastest. Differences within timing noise do not flip a choice, and with it every cell's identity."""
    default = candidates[0]
    best = min(candidates, key=milliseconds.__getitem__)
    return best if milliseconds[best] < (1 - MARGIN) * milliseconds[default] else default


def _decoder(generator: torch.Generator) -> list[nn.Linear]:
    layers = [nn.Linear(50, 200), nn.Linear(200, 200), nn.Linear(200, 784)]
    with torch.no_grad():
        for p in (p for layer in layers for p in layer.parameters()):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return layers


def _forward(layers: list[nn.Linear], h: torch.Tensor, route: str) -> torch.Tensor:
    """tanh MLP to its last layer's |logits| without autograd, as ``lvbench.compute.matmul`` runs it by
    ``route``: fused oneDNN calls (|·| as a leaky ReLU of slope -1), or ``F.linear`` and the activation."""
    *hidden, last = layers
    if route == "onednn":
        for layer in hidden:
            h = onednn_linear(h, layer.weight, layer.bias, "tanh")
        return onednn_linear(h, last.weight, last.bias, "leaky_relu", [-1.0])
    for layer in hidden:
        h = torch.tanh(F.linear(h, layer.weight, layer.bias))
    return F.linear(h, last.weight, last.bias).abs_()


def _logits(layers: list[nn.Linear], h: torch.Tensor, route: str) -> torch.Tensor:
    """The same MLP's logits with autograd, as ``mlp_forward`` records it by ``route``."""
    *hidden, last = layers
    for layer in hidden:
        h = (
            OneDNNLinear.apply(h, layer.weight, layer.bias, "tanh")
            if route == "onednn"
            else torch.tanh(F.linear(h, layer.weight, layer.bias))
        )
    return OneDNNLinear.apply(h, last.weight, last.bias, "none") if route == "onednn" else last(h)


def _measure(threads: int) -> dict[str, Any]:
    """Time each choice's candidates on the IWAE paper's decoder with ``threads`` torch threads (see the
    module docstring)."""
    # its own generator, autograd on whatever the caller's mode, the global RNG left as it was: a
    # calibration triggered by a cell's first layer must not change the cell's draws
    with torch_threads(threads), torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        generator = torch.Generator().manual_seed(0)
        layers = _decoder(generator)
        z_eval = torch.randn(4096, 50, generator=generator)
        z_train = torch.randn(5, 100, 50, generator=generator)
        x = torch.bernoulli(torch.full((100, 784), 0.3), generator=generator)
        return _measure_on(layers, z_eval, z_train, x)


def _measure_on(
    layers: list[nn.Linear], z_eval: torch.Tensor, z_train: torch.Tensor, x: torch.Tensor
) -> dict[str, Any]:
    onednn = onednn_enabled()
    linear = ("onednn", "aten") if onednn else ("aten",)
    parameters = [p for layer in layers for p in layer.parameters()]
    ms: dict[str, dict[str, float]] = {}
    choices: dict[str, str] = {}

    def forward(route: str) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return _forward(layers, z_eval, route)

        return run

    def step(route: str, bernoulli: str) -> Callable[[], object]:
        def run() -> object:
            for p in parameters:
                p.grad = None
            logits = _logits(layers, z_train, route)
            if bernoulli == "bce":
                value = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
            else:
                value = (x * logits).sum(-1) - SoftplusSum.apply(logits)
            value.sum().backward()
            return value

        return run

    if onednn:
        ms["linear"] = _best_of({name: forward(name) for name in linear})
        choices["linear"] = fastest(ms["linear"], CHOICES["linear"])
    timed = _best_of({f"{r}+{b}": step(r, b) for r in linear for b in CHOICES["bernoulli_autograd"]})
    ms["linear_autograd"] = {r: min(v for k, v in timed.items() if k.startswith(r + "+")) for r in linear}
    route = fastest(ms["linear_autograd"], linear)  # with each route's better Bernoulli kernel
    by_route = {b: timed[f"{route}+{b}"] for b in CHOICES["bernoulli_autograd"]}
    ms["bernoulli_autograd"] = by_route  # the two interact through the logits: timed on the chosen route
    choices["bernoulli_autograd"] = fastest(by_route, CHOICES["bernoulli_autograd"])
    if onednn:
        choices["linear_autograd"] = route
    else:
        del ms["linear_autograd"]
    for name, candidates in CHOICES.items():
        choices.setdefault(name, "aten" if name.startswith("linear") else candidates[0])
    return {
        "choices": choices,
        "milliseconds": {name: {k: round(v, 4) for k, v in times.items()} for name, times in ms.items()},
        "threads": torch.get_num_threads(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": cache_key(),
    }
