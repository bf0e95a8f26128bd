"""Put the repo root on sys.path so tests can `import data_loader` (and the trainers) from any cwd."""
import sys

import pytest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture
def one_blas_thread(monkeypatch):
    """NumPy's OpenBLAS on one thread for the whole test, set as a user would (the trainers'
    policy then leaves it alone): a test comparing two runs bit for bit must not see their
    share of the cores change between them when a trainer starts elsewhere on the machine
    (another thread count adds a product's parts in another order)."""
    from harness import threads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    before = threads.openblas_threads()
    threads.set_openblas_threads(1)
    yield
    if before:
        threads.set_openblas_threads(before)
