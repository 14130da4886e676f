"""The house's shape, held by tests: layers that import only downward (no cycles), one capability
rule, one proposal list, and the one switch between the fast and the plain eager compute route."""

from __future__ import annotations

import ast
import pathlib
import typing

import pytest
import torch

import lvbench
from lvbench.compute.routes import ENV_VAR, current_route, use_route

PACKAGE = pathlib.Path(lvbench.__file__).parent
#: Each layer and the layers it may import (besides itself). The interface (api, cli, describe and the
#: package root) may import anything.
LAYERS = {
    "core": set(),
    "compute": {"core"},
    "models": {"core", "compute"},
    "data": {"core", "compute", "models"},
    "estimators": {"core", "compute", "models"},
    "analysis": {"core", "compute", "models", "data", "estimators"},
    "experiments": {"core", "compute", "models", "data", "estimators", "analysis"},
    "reports": {"core", "compute", "models", "data", "estimators", "analysis", "experiments"},
}


def _module(path: pathlib.Path) -> str:
    parts = ["lvbench", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every lvbench module -> the lvbench modules it imports (at the top or inside a function)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lvbench"):
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name and not t.startswith(name + ".")}
        graph[name] = found
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "interface"


def test_layers_import_only_the_layers_below_them():
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in _imports().items()
        for t in targets
        if _layer(m) in LAYERS and _layer(t) != _layer(m) and _layer(t) not in LAYERS[_layer(m)]
    )
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_module_imports_itself_around_a_cycle():
    graph = _imports()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        seen[module] = 1
        for target in sorted(graph[module]):
            if seen.get(target) == 1:
                return [*path[path.index(target) :], target] if target in path else [*path, target]
            if target not in seen and (cycle := visit(target, [*path, target])):
                return cycle
        seen[module] = 2
        return None

    for module in sorted(graph):
        if module not in seen:
            cycle = visit(module, [module])
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_named_proposals_are_one_list():
    from lvbench.core.protocol import PROPOSAL_NEEDS, ProposalName
    from lvbench.experiments.spec import PROPOSALS

    assert tuple(PROPOSAL_NEEDS) == typing.get_args(ProposalName) == PROPOSALS


def test_capabilities_follow_one_rule_for_subclasses_and_protocol_objects():
    """A protocol-only object with a model's parts has exactly the capabilities the model has."""
    from lvbench.core.protocol import capabilities_of

    class Parts:  # the same prior, likelihood, encoder and exact parts, without the base class
        def __init__(self, model):
            self.model, self.encoder = model, model.encoder

        def prior(self):
            return self.model.prior()

        def likelihood(self, z):
            return self.model.likelihood(z)

        def log_joint(self, x, z):
            return self.model.log_joint(x, z)

    for name in lvbench.list_models():
        model = lvbench.get_model(name)()
        parts = Parts(model)
        for method in ("log_marginal", "posterior", "relaxed_likelihood", "enumerate_latents"):
            own = getattr(type(model), method, None)
            if own is not None and not getattr(own, "__lvbench_placeholder__", False):
                setattr(parts, method, getattr(model, method))
        assert capabilities_of(parts) == capabilities_of(model) == model.capabilities(), name


def test_binary_latent_is_inferred_not_declared_by_hand():
    from lvbench.models import BinaryVAE

    assert "capabilities" not in vars(BinaryVAE)
    assert {"binary_latent", "enumerable", "exact_marginal"} <= BinaryVAE(6, 3, (5,)).capabilities()


# -- the one switch between compute routes ------------------------------------------------------------
def test_route_defaults_to_fast_and_the_switch_nests(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert current_route() == "fast"
    with use_route("eager"):
        assert current_route() == "eager"
        with use_route("fast"):
            assert current_route() == "fast"
        assert current_route() == "eager"
    monkeypatch.setenv(ENV_VAR, "eager")
    assert current_route() == "eager"


def test_an_unknown_route_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "turbo")
    with pytest.raises(lvbench.LvbenchInputError, match=r"\$LVBENCH_ROUTE must be one of \['fast', 'eager'\]"):
        current_route()
    with pytest.raises(lvbench.LvbenchInputError, match="route must be one of"):
        with use_route("fastest"):
            pass


def test_the_eager_route_is_named_in_the_matmul_record_and_so_in_every_cell_id():
    from lvbench.compute.matmul import cpu_matmul_backend
    from lvbench.experiments.cells import expand
    from lvbench.experiments.spec import resolve_spec

    model = {"type": "linear_gaussian", "data_dim": 3, "latent_dim": 2}
    spec = resolve_spec({"models": {"lg": model}, "estimators": {"iwae": {"k": [5]}}})
    instances = {"lg": lvbench.get_model("linear_gaussian")(3, 2)}
    fast = expand(spec, instances, {"lg": "key"})[0]
    with use_route("eager"):
        assert cpu_matmul_backend() == "eager"
        eager = expand(spec, instances, {"lg": "key"})[0]
    assert fast[0].matmul != "eager" and eager[0].matmul == "eager" and fast[0].id != eager[0].id


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
def test_fast_and_eager_routes_compute_the_same_vae_log_joint(grad):
    """Both routes against float64 torch.distributions, within float32 rounding of the logits' sum."""
    from lvbench.models import VAE

    torch.manual_seed(0)
    model = VAE(784, 50, (200, 200))
    x = (torch.rand(7, 784) < 0.3).float()
    z = torch.randn(11, 7, 50)
    reference = model.double().log_joint(x.double(), z.double()).detach()  # the eager route in float64
    model.float()
    values, grads = {}, {}
    for route in ("fast", "eager"):
        with use_route(route), torch.set_grad_enabled(grad):
            model.zero_grad()
            value = model.log_joint(x, z)
            if grad:
                value.sum().backward()
                grads[route] = model.decoder[0].weight.grad.clone()
            values[route] = value.detach().double()
    tolerance = 1e-5 * reference.abs().max()  # float32: ~1e-7 per op, over 784 summed terms
    for route, value in values.items():
        assert (value - reference).abs().max() <= tolerance, route
    if grad:
        assert torch.allclose(grads["fast"], grads["eager"], rtol=1e-4, atol=1e-5)


def test_a_gradient_reference_seed_is_shared_by_a_comparison_and_free_of_code_digests(monkeypatch):
    """Every estimator of one (model, objective, k, device) meets the same reference draws, and a change
    of code that changes no number (lvbench's source digest is in every id) draws the same reference."""
    from lvbench.experiments import cells as cells_module
    from lvbench.experiments.spec import resolve_spec

    spec = resolve_spec(
        {
            "models": {"lg": {"type": "linear_gaussian", "data_dim": 3, "latent_dim": 2}},
            "gradients": {"reparam": {"k": [5]}, "score_function": {"k": [5]}},
        }
    )
    instances = {"lg": lvbench.get_model("linear_gaussian")(3, 2)}
    before = cells_module.expand(spec, instances, {"lg": "key"})[0]
    monkeypatch.setattr(cells_module, "lvbench_version", lambda: "0.0.0+edited")
    after = cells_module.expand(spec, instances, {"lg": "key-of-edited-code"})[0]
    assert len({c.reference_seed for c in before}) == 1 and before[0].reference_seed != 0
    assert [c.reference_seed for c in before] == [c.reference_seed for c in after]
    assert {c.id for c in before}.isdisjoint(c.id for c in after)  # while every id changed
