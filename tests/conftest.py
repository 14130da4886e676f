import os
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from lvbench.data import reference_vae_path

#: The MNIST VAE trained by others, shipped inside lvbench so that every clone runs the tests on it.
REFERENCE_VAE = pathlib.Path(os.environ.get("LVBENCH_REFERENCE_VAE", reference_vae_path()))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
