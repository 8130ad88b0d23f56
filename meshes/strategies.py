"""Sharding strategies as values: a mesh layout and one rules table from logical axes to mesh axes.

Comparing strategies means swapping this value and nothing else; model code only speaks logical names.
"""

from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from meshes.systems import System
from tracer.errors import ConfigError

# Megatron-style tensor parallelism: heads and the MLP's hidden split over 'tp', the vocabulary too (embedding
# and LM head); sequences split over 'dp' replicas. The KV cache follows: kv heads over 'tp', then batch over 'dp'.
# Routed experts are spread over the same 'tp' devices (expert parallelism inside the group, as servers run MoE
# models with tensor-parallel attention); MLA's latent cache has no head axis and is replicated across 'tp'.
TENSOR_RULES = (
    ("batch", "dp"),
    ("heads", "tp"),
    ("kv_heads", "tp"),
    ("mlp", "tp"),
    ("vocab", "tp"),
    ("experts", "tp"),
)


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    tp: int | None  # devices in one tensor-parallel group; None: the whole scale-up domain
    rules: tuple[tuple[str, str], ...]

    def mesh_shape(self, system: System) -> dict[str, int]:
        tp = min(self.tp or system.domain_size, system.n_chips)
        if system.n_chips % tp:
            raise ConfigError(f"strategy {self.name}: tp={tp} does not divide {system.n_chips} chips of {system.name}")
        return {"dp": system.n_chips // tp, "tp": tp}

    def spec(self, logical_axes) -> PartitionSpec:
        """Logical axes -> PartitionSpec; two logical axes may not claim one mesh axis."""
        rules = dict(self.rules)
        mesh_axes = [rules.get(a) if a is not None else None for a in logical_axes]
        used = [m for m in mesh_axes if m is not None]
        if len(used) != len(set(used)):
            raise ConfigError(f"strategy {self.name}: axes {logical_axes} map twice onto one mesh axis ({used})")
        return PartitionSpec(*mesh_axes)


STRATEGIES = {s.name: s for s in (
    Strategy("tp", "tensor parallel across one scale-up domain (8 GPUs in a node, 72 in an NVL72)", None,
             TENSOR_RULES),
    Strategy("tp-dp", "tensor parallel inside each group of 8, independent replicas across groups", 8, TENSOR_RULES),
)}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def virtual_mesh(system: System, strategy: Strategy) -> Mesh:
    """A mesh of emulated devices in id order, reshaped (dp, tp): each tp group holds consecutive ids, so it sits
    inside one scale-up domain (System.node_of) and uses the links it would use on the real topology."""
    shape = strategy.mesh_shape(system)
    devices = jax.devices()
    if len(devices) < system.n_chips:
        raise ConfigError(f"{system.name} needs {system.n_chips} devices but jax has {len(devices)}; "
                          "import tracer before running anything in jax (or set TRACER_CPU_DEVICES)")
    grid = np.array(devices[: system.n_chips]).reshape(tuple(shape.values()))
    return Mesh(grid, tuple(shape), axis_types=(AxisType.Auto,) * len(shape))


def _nearest_multiples(value: int, step: int) -> str:
    lower, upper = value // step * step, -(-value // step) * step
    return " or ".join(str(b) for b in (lower, upper) if b > 0)


def sharding(mesh: Mesh, strategy: Strategy, logical_axes, shape, what: str) -> NamedSharding:
    """The NamedSharding of an array, after checking that every sharded dimension divides."""
    spec = strategy.spec(logical_axes)
    for size, axis, mesh_axis in zip(shape, logical_axes, spec, strict=True):
        if mesh_axis is None:
            continue
        ways = mesh.shape[mesh_axis]
        if size % ways == 0:
            continue
        if axis == "kv_heads" and ways % size == 0:  # fewer kv heads than devices: their weights are replicated
            spec = PartitionSpec(*(None if a == axis else m for a, m in zip(logical_axes, spec, strict=True)))
            continue
        if axis == "batch":
            raise ConfigError(f"batch {size} does not divide over {ways} replicas ({mesh_axis}={ways} in strategy "
                              f"{strategy.name}); nearest batches that work: {_nearest_multiples(size, ways)}")
        raise ConfigError(f"{what}: {axis}={size} does not divide over {mesh_axis}={ways} (strategy {strategy.name}); "
                          f"choose a strategy with a tensor-parallel group that divides {size}, e.g. tp-dp")
    return NamedSharding(mesh, spec)
