import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any test imports transformers: nothing may download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)  # tests run on 2 xdist workers: one thread each avoids oversubscription


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


