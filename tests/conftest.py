import os
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from lvbench.data import reference_vae_path

#: The MNIST VAE trained by others, shipped inside lvbench so that every clone runs the tests on it.
REFERENCE_VAE = pathlib.Path(os.environ.get("LVBENCH_REFERENCE_VAE", reference_vae_path()))


#: The tests' own cache of this machine's kernel calibration (``lvbench.compute.kernels``), shared by
#: the xdist workers (one measures, the others wait for it) and apart from the user's ~/.cache/lvbench.
os.environ.setdefault("LVBENCH_CACHE_DIR", str(pathlib.Path(__file__).parent.parent / ".pytest_cache" / "lvbench"))

#: Under pytest-xdist each worker process takes one core's share of torch threads, so that parallel
#: workers do not oversubscribe the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


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
