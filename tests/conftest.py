import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    import pyro

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
