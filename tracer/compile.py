"""Abstract step programs -> compiled programs: weights, caches and tokens as ShapeDtypeStructs with shardings
(nothing allocated), jitted, lowered and compiled over a virtual mesh of emulated CPU devices."""

import math
import os
import time
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from meshes.strategies import Strategy, nearest_multiples, sharding, virtual_mesh
from meshes.systems import System
from models.config import DTYPES, ModelConfig
from models.sharding import use_translator
from models.transformer import ATTN_CORE, KVCache, abstract_model, cache_layout, decode, prefill
from tracer.cost import ProgramCost, read_program
from tracer.errors import ConfigError
from tracer.hlo import parse_module

# Emulated CPU devices, set before the backend starts: one process holds both 8- and 72-device meshes.
# If jax already started (a notebook that used it first), the count stays as it is and virtual_mesh says how many
# devices a system needs.
CPU_DEVICES = int(os.environ.get("TRACER_CPU_DEVICES", "72"))
try:
    jax.config.update("jax_num_cpu_devices", CPU_DEVICES)
except RuntimeError:
    pass


@dataclass(frozen=True)
class Workload:
    batch: int  # sequences in a step
    prompt: int  # prefill tokens per sequence
    context: int  # KV cache capacity; a decode step attends over all of it


@dataclass(frozen=True)
class CompiledStep:
    """One compiled step, per device."""

    cost: ProgramCost
    weight_bytes: float  # weight shards held by one device
    kv_cache_bytes: float  # KV cache shard held by one device (an argument in decode, a result in prefill)
    xla_memory: dict  # Compiled.memory_analysis() as the compiler reports it
    compiler: str
    compile_s: float


def _shard_bytes(sds: jax.ShapeDtypeStruct) -> float:
    shape = sds.sharding.shard_shape(sds.shape)
    bits = 4 if jnp.dtype(sds.dtype) == jnp.float4_e2m1fn else 8 * jnp.dtype(sds.dtype).itemsize  # numpy: 1 byte
    return float(math.prod(shape)) * bits / 8


def _tree_bytes(tree) -> float:
    return sum(_shard_bytes(x) for x in jax.tree.leaves(tree))


def abstract_weights(cfg: ModelConfig, mesh, strategy: Strategy):
    """(graphdef, weights) with every weight a sharded ShapeDtypeStruct; stacked layers gain a 'layers' axis. The
    model is built under the strategy's translator: its layout may depend on how axes are split (expert slots)."""
    with translator(mesh, strategy):
        graphdef, state = abstract_model(cfg)

    def place(path, var):
        axes = var.get_metadata()["logical_axes"]
        value = var.get_value()
        if len(value.shape) == len(axes) + 1:
            axes = ("layers", *axes)
        what = "/".join(str(p) for p in path)
        return var.replace(jax.ShapeDtypeStruct(value.shape, value.dtype,
                                                sharding=sharding(mesh, strategy, axes, value.shape, what,
                                                                  weights=True)))

    return graphdef, nnx.map_state(place, state)


def translator(mesh, strategy: Strategy):
    """Logical axes -> shardings on `mesh` under `strategy`, around tracing (models.sharding)."""
    def to_sharding(axes, shape, prefer=None):
        return sharding(mesh, strategy, axes, shape, "activation " + str(axes), prefer=prefer)

    return use_translator(to_sharding, lambda axis, shared=None: strategy.ways(axis, dict(mesh.shape), shared=shared))


def _compile(fn, args, mesh, strategy: Strategy, f32_as, vector_dtype, **jit_kw):
    start = time.perf_counter()
    with translator(mesh, strategy):
        compiled = jax.jit(fn, **jit_kw).lower(*args).compile()
    elapsed = time.perf_counter() - start
    cost = read_program(parse_module(compiled.as_text()), f32_as, ATTN_CORE, vector_dtype)
    mem = compiled.memory_analysis()
    xla_memory = {k: getattr(mem, f"{k}_size_in_bytes") for k in ("argument", "output", "alias", "temp")}
    return cost, xla_memory, elapsed


def compile_steps(cfg: ModelConfig, system: System, strategy: Strategy, work: Workload,
                  phases=("prefill", "decode")) -> dict[str, CompiledStep]:
    mesh = virtual_mesh(system, strategy)
    for axis, length, what in (("seq", work.prompt, "prompt"), ("cache_seq", work.context, "context")):
        shards = strategy.ways(axis, dict(mesh.shape))
        if length % shards:
            raise ConfigError(f"{what} {length} does not divide over the {shards} devices that split sequences "
                              f"(strategy {strategy.name}); nearest that work: {nearest_multiples(length, shards)}")
    compiler = jax.devices()[0].platform
    # The CPU compiler upcasts bf16 to f32 (xla-facts.md): count those buffers at the program's width.
    f32_as = "bf16" if compiler == "cpu" and cfg.dtype == "bfloat16" else None
    graphdef, weights = abstract_weights(cfg, mesh, strategy)
    weight_bytes = _tree_bytes(weights)

    def arg(shape, dtype, axes, what):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding(mesh, strategy, axes, shape, what))

    with translator(mesh, strategy):
        layout = cache_layout(cfg, work.batch, work.context)
    cache = KVCache(tuple({name: arg(shape, DTYPES[cfg.kv], axes, f"KV cache {name}")
                           for name, (shape, axes) in stack.items()} for stack in layout))
    cache_shardings = jax.tree.map(lambda x: x.sharding, cache)
    logits_sharding = sharding(mesh, strategy, ("batch", "vocab"), (work.batch, cfg.vocab_size), "logits")
    steps = {}
    if "prefill" in phases:
        tokens = arg((work.batch, work.prompt), jnp.int32, ("batch", "seq"), "tokens")
        fn = partial(prefill, graphdef=graphdef, capacity=work.context)
        cost, mem, secs = _compile(fn, (weights, tokens), mesh, strategy, f32_as, cfg.dtype,
                                   out_shardings=(logits_sharding, cache_shardings))
        steps["prefill"] = CompiledStep(cost, weight_bytes, _tree_bytes(cache), mem, compiler, secs)
    if "decode" in phases:
        tokens = arg((work.batch,), jnp.int32, ("batch",), "tokens")
        fn = partial(decode, graphdef=graphdef)
        cost, mem, secs = _compile(fn, (weights, cache, tokens, tokens), mesh, strategy, f32_as, cfg.dtype,
                                   donate_argnums=(1,), out_shardings=(logits_sharding, cache_shardings))
        steps["decode"] = CompiledStep(cost, weight_bytes, _tree_bytes(cache), mem, compiler, secs)
    return steps
