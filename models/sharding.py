"""Logical axis names for activations. Model code speaks only these names; a strategy decides where they go.

The tracer installs a translator (logical axes -> sharding) around tracing; without one, constraints are no-ops,
so the model also runs unsharded. `ways(axis)` tells the model how many shards a logical axis is split into (1
unsharded): MoE dispatch forms one token group per batch shard and one expert bin per expert shard, and GQA repeats
kv heads when the tensor-parallel group is larger than their number.
"""

import contextlib
import contextvars
from collections.abc import Callable

import jax

_TRANSLATOR: contextvars.ContextVar[tuple[Callable, Callable] | None] = contextvars.ContextVar("logical_axes",
                                                                                             default=None)


@contextlib.contextmanager
def use_translator(to_sharding: Callable, ways: Callable[[str], int]):
    """to_sharding(logical_axes, shape, prefer) -> a jax Sharding; ways(logical_axis) -> shards of that axis."""
    token = _TRANSLATOR.set((to_sharding, ways))
    try:
        yield
    finally:
        _TRANSLATOR.reset(token)


def constrain(x: jax.Array, *logical_axes: str | None, prefer: str | None = None) -> jax.Array:
    """`prefer`: where two of the logical axes share mesh axes, the one that keeps them (the other is gathered
    along them): how tokens move from their groups' devices to their experts' devices."""
    active = _TRANSLATOR.get()
    if active is None:
        return x
    return jax.lax.with_sharding_constraint(x, active[0](logical_axes, x.shape, prefer))


def ways(logical_axis: str, shared_with: str | None = None) -> int:
    """Shards of a logical axis; with `shared_with`, only over the mesh axes the two have in common (token groups
    that live on the same devices as the experts)."""
    active = _TRANSLATOR.get()
    return 1 if active is None else active[1](logical_axis, shared_with)


def stripes(axis: str, length: int) -> int:
    """Devices a sequence axis of `length` positions is split over (1 when it is not split, or does not divide:
    the strategy then keeps it whole)."""
    s = ways(axis)
    return s if s > 1 and length % s == 0 else 1


def same_split(a: str, b: str) -> bool:
    """Whether two logical axes are split over the same devices (partial sums along them can be added up before one
    reduction)."""
    return ways(a) == ways(b) == ways(a, shared_with=b)
