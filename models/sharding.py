"""Logical axis names for activations. Model code speaks only these names; a strategy decides where they go.

The tracer installs a translator (logical axes -> sharding) around tracing; without one, constraints are no-ops,
so the model also runs unsharded.
"""

import contextlib
import contextvars
from collections.abc import Callable

import jax

_TRANSLATOR: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("logical_axes", default=None)


@contextlib.contextmanager
def use_translator(to_sharding: Callable):
    """to_sharding(logical_axes, shape) -> a jax Sharding."""
    token = _TRANSLATOR.set(to_sharding)
    try:
        yield
    finally:
        _TRANSLATOR.reset(token)


def constrain(x: jax.Array, *logical_axes: str | None) -> jax.Array:
    to_sharding = _TRANSLATOR.get()
    if to_sharding is None:
        return x
    return jax.lax.with_sharding_constraint(x, to_sharding(logical_axes, x.shape))
