import dataclasses

import pytest

import tracer.compile  # noqa: F401  (sets the emulated CPU device count before jax starts)
from models.config import TINY


@pytest.fixture(scope="session")
def small():
    """Large enough that matmuls dominate elementwise work; every sharded axis divides 8."""
    return dataclasses.replace(TINY, name="small", vocab_size=1024, hidden=512, n_layers=2, n_heads=8, n_kv_heads=8,
                               head_dim=64, ffn=2048)
