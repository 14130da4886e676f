"""Data loaders (bundled digits, MNIST-format files) and VAE training on the bundled data."""

import gzip
import struct

import numpy as np
import pytest
import torch

import lvbench
from lvbench import LvbenchInputError
from lvbench.analysis.training import train_vae
from lvbench.data import load_dataset, load_digits, load_mnist, sample_from_model
from lvbench.models import VAE, LinearGaussian, load_vae


def test_digits_bundled_static_and_dynamic():
    train, test = load_digits("train"), load_digits("test")
    assert train.tensor().shape == (1500, 64) and test.tensor().shape == (297, 64)
    x = train.tensor()
    assert set(torch.unique(x).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(x, load_digits("train").tensor())  # static: same draw every time
    dyn = load_digits("train", binarization="dynamic")
    g = torch.Generator().manual_seed(1)
    assert not torch.equal(dyn.epoch(g), dyn.epoch(g))  # dynamic: a fresh draw each epoch
    assert load_digits("all", binarization="threshold").tensor().shape == (1797, 64)
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
    with pytest.raises(ValueError, match="binarization"):
        load_digits(binarization="random")


def write_idx(path, images):
    with gzip.open(path, "wb") as fh:
        fh.write(b"\x00\x00\x08\x03" + struct.pack(">3I", *images.shape) + images.tobytes())


def test_mnist_idx_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    ds = load_mnist(tmp_path / "train-images-idx3-ubyte.gz", binarization="none")
    np.testing.assert_allclose(ds.tensor().numpy(), images.reshape(5, -1) / 255.0, rtol=1e-6)
    np.savez(tmp_path / "mnist.npz", x_train=images)
    assert load_dataset("mnist", path=tmp_path / "mnist.npz").tensor().shape == (5, 784)


def test_mnist_bad_inputs(tmp_path):
    with pytest.raises(LvbenchInputError, match="not found"):
        load_mnist(tmp_path / "nope.gz")
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic number"):
        load_mnist(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(b"\x00\x00\x08\x02" + struct.pack(">2I", 3, 4) + b"\x00" * 5)
    with pytest.raises(ValueError, match="header says shape"):
        load_mnist(tmp_path / "short.idx")
    np.savez(tmp_path / "wrong.npz", labels=np.zeros(3))
    with pytest.raises(ValueError, match="none of the keys"):
        load_mnist(tmp_path / "wrong.npz")
    np.savez(tmp_path / "range.npz", x=np.full((2, 4), 3.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_mnist(tmp_path / "range.npz")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")


def test_sample_from_model_is_reproducible():
    m = LinearGaussian.random(3, 2)
    a, b = sample_from_model(m, 4, seed=3), sample_from_model(m, 4, seed=3)
    torch.testing.assert_close(a, b)


def test_vae_trains_on_bundled_digits_and_survives_save_load(tmp_path):
    torch.manual_seed(0)
    train, test = load_digits("train", binarization="dynamic"), load_digits("test").tensor()
    model = VAE(64, latent_dim=8, hidden=(64, 64))
    iwae = lvbench.get_estimator("iwae")
    before = iwae(model, test, num_samples=50).mean().item()
    history = train_vae(model, train, epochs=15, objective="iwae", k=5, progress=False)
    after = iwae(model, test, num_samples=50).mean().item()
    assert after > before + 10, (before, after)  # a marked improvement (about 20 nats in practice)
    assert history["objective"].iloc[-1] > history["objective"].iloc[0] + 5
    model.save(tmp_path / "digits.pt")
    loaded = load_vae(tmp_path / "digits.pt")
    torch.manual_seed(5)
    a = iwae(model, test, num_samples=10)
    torch.manual_seed(5)
    torch.testing.assert_close(iwae(loaded, test, num_samples=10), a)
