import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # 2 threads on a shared 2-core runner spin against each other (measured 10x slower under load);
    # one thread keeps these tests steady. The library itself leaves torch's default alone.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
