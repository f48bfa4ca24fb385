import pytest
import torch

torch.set_num_threads(1)  # tests run on 2 xdist workers: one thread each avoids oversubscription


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


