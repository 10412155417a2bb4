"""Test set-up: 8 fake CPU devices so every test exercises the multi-device path.

The flag must be set before jax initialises its backends, so it is set here, at import
of the conftest, ahead of any test module importing jax.
"""
import os

from jaxhfc.parallel import request_cpu_devices  # noqa: E402  (imports jax; its backends start later)

request_cpu_devices(8)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def n_devices() -> int:
    return jax.device_count()
