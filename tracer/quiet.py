"""The GPU and TPU compiler plugins log from C++ as they load and start: no CUDA driver, no TPU host. On a machine
without either that is expected, so tracer keeps those lines out of its output; Python errors still show."""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_jax():
    """Import jax (and so discover the plugins) with their start-up lines silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the compilers' own warnings
    with quiet_stderr():
        import jax  # noqa: F401
