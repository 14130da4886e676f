"""The one switch between lvbench's compute routes.

- ``fast`` (the default): on the CPU in float32 each MLP layer and its activation run as one oneDNN
  matmul with the bias and activation in its epilogue (``lvbench.compute.matmul``), and the Bernoulli
  VAE's log-likelihood is the fused form of ``lvbench.compute.bernoulli`` (no [.., N, D] tensor beyond
  the logits; Σ softplus from |l| in blocks).
- ``eager``: every model runs its plain torch modules and its ``torch.distributions`` densities, the
  route anyone would write by hand: the check that the fast route computes the same function, and the
  way around a fast kernel one does not trust.

Both compute the same function; only the rounding differs (tested against float64, and against each
other). Set ``LVBENCH_ROUTE=eager`` in the environment (worker processes inherit it) or, in one
process, ``with use_route("eager"): ...``. The route in force is recorded with every run and is part of
every cell's identity (through ``cpu_matmul_backend``), so numbers of the two routes never mix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from lvbench.core.errors import LvbenchInputError

__all__ = ["ENV_VAR", "ROUTES", "current_route", "fast_route", "use_route"]

ROUTES = ("fast", "eager")
#: The environment variable that selects the route for a process and the workers it starts.
ENV_VAR = "LVBENCH_ROUTE"
_forced: list[str] = []


def _checked(name: str, where: str) -> str:
    if name not in ROUTES:
        raise LvbenchInputError(f"{where} must be one of {list(ROUTES)}, got {name!r}")
    return name


def current_route() -> str:
    """The route in force: the innermost ``use_route``, else ``$LVBENCH_ROUTE``, else "fast"."""
    if _forced:
        return _forced[-1]
    return _checked(os.environ.get(ENV_VAR, "fast") or "fast", f"${ENV_VAR}")


def fast_route() -> bool:
    """Whether the fast kernels may run (each still steps aside where it does not apply)."""
    return current_route() == "fast"


@contextlib.contextmanager
def use_route(name: str) -> Iterator[None]:
    """Run a block on route ``name`` ("fast" or "eager") in this process."""
    _forced.append(_checked(name, "route"))
    try:
        yield
    finally:
        _forced.pop()
