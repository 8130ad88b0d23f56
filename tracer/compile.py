"""Abstract step programs -> compiled programs: weights, caches and tokens as ShapeDtypeStructs with shardings
(nothing allocated), jitted, lowered and compiled over a mesh of devices that need not exist: emulated CPU devices
(the `cpu` compiler), or the devices of a compile-only GPU or TPU topology (the `gpu` and `tpu` compilers, with their
extras installed), each compiler producing its own program for the same step."""

import contextlib
import functools
import importlib.util
import math
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from base.inputs import ConfigError
from meshes.strategies import Strategy, nearest_multiples, sharding, virtual_mesh
from meshes.systems import System
from meshes.targets import GPU_TARGETS
from models.attention import cache_dtype
from models.config import ModelConfig
from models.formats import dtype_bits
from models.scopes import SCOPES
from models.sharding import use_translator
from models.transformer import KVCache, abstract_model, cache_shapes, decode, prefill
from tracer.defaults import COMPILERS
from tracer.errors import DoesNotFit
from tracer.quiet import quiet_stderr
from tracer.quirks import QUIRKS, CompilerQuirks
from tracer.read import parse_module, read_program
from tracer.step import CompiledStep, Workload, XlaMemory

# Emulated CPU devices, set before the backend starts: one process holds both 8- and 72-device meshes.
# If jax already started (a notebook that used it first), the count stays as it is and virtual_mesh says how many
# devices a system needs.
MAX_CPU_DEVICES = 2048  # what one process's CPU backend emulates at most (xla-facts.md)


def _cpu_devices(text: str) -> tuple[int, str | None]:
    """(the emulated device count, why TRACER_CPU_DEVICES was not taken): 256 by default, the largest built-in
    system (a v5e or v6e pod)."""
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_CPU_DEVICES:
        return int(text), None
    return 256, (f"TRACER_CPU_DEVICES={text!r} is not a whole number from 1 to {MAX_CPU_DEVICES} (the most one "
                 "process emulates); unset it or give one in that range")


CPU_DEVICES, CPU_DEVICES_PROBLEM = _cpu_devices(os.environ.get("TRACER_CPU_DEVICES", "256"))
try:
    jax.config.update("jax_num_cpu_devices", CPU_DEVICES)
    jax.config.update("jax_platforms", "cpu")  # the GPU and TPU plugins only compile here: no device is started
except RuntimeError:
    pass

def missing_extra(compiler: str) -> str | None:
    """Why `compiler` cannot run here (its extra is not installed), or None."""
    if QUIRKS[compiler].plugin is None:
        return None
    module, package = QUIRKS[compiler].plugin
    if importlib.util.find_spec(module) is None:
        return f"{package} is not installed: pip install -e '.[{compiler}]'"
    return None


def choose_compiler(compiler: str, system: System) -> tuple[str, str]:
    """(compiler, why): `auto` takes the system's own compiler when its extra is installed, else cpu."""
    if compiler not in COMPILERS:
        raise ConfigError(f"unknown compiler {compiler!r}; choose one of: {', '.join(COMPILERS)}")
    own = system.chip.compiler
    if own == "cpu":  # no compiler here targets it (AMD GPUs; a TPU the pinned libtpu does not know)
        if compiler not in ("cpu", "auto"):
            raise ConfigError(f"--compiler {compiler} cannot target {system.name} ({system.chip.name}): no compiler "
                              "here does; use --compiler cpu (emulated devices with its figures)")
        return "cpu", (f"no compiler here targets the {system.chip.name}: emulated CPU devices with its figures, "
                       "its own compiler's fusion and memory choices unseen")
    if compiler == "auto":
        reason = missing_extra(own)
        if reason is None:
            return own, f"auto: {system.name}'s own compiler"
        return "cpu", f"auto: the {own} compiler is unavailable, {reason}; emulated CPU devices instead"
    if compiler != "cpu" and compiler != own:
        raise ConfigError(f"--compiler {compiler} cannot target {system.name} ({system.chip.name}); use --compiler "
                          f"{own}, cpu or auto")
    reason = missing_extra(compiler)
    if reason is not None:
        raise ConfigError(f"--compiler {compiler}: {reason}")
    return compiler, "chosen"


@functools.cache
def _topology_devices(compiler: str, chip: str, topology: str) -> tuple:
    from jax.experimental import topologies

    with quiet_stderr():
        jax.devices()  # start the CPU backend first (plugins register as it starts)
        if compiler == "gpu":
            desc = topologies.get_topology_desc(platform="cuda", target_config=GPU_TARGETS[chip].proto_text(),
                                                topology=topology)
        else:
            desc = topologies.get_topology_desc(topology, "tpu")
    return tuple(desc.devices)


def check_devices(system: System, compiler: str):
    """The emulated CPU devices can stand for the system's chips."""
    if compiler == "cpu":
        if CPU_DEVICES_PROBLEM:
            raise ConfigError(CPU_DEVICES_PROBLEM)
        if system.n_chips > MAX_CPU_DEVICES:
            raise ConfigError(f"{system.name} has {system.n_chips} chips, more than the {MAX_CPU_DEVICES} devices "
                              "one process emulates; compile a smaller cluster, or use --compiler gpu or tpu")


def target_devices(system: System, compiler: str) -> list:
    """The devices a step is compiled for, in id order: emulated CPU devices, or a compile-only topology's."""
    check_devices(system, compiler)
    if compiler == "cpu":
        with quiet_stderr():
            return jax.devices()
    if compiler == "gpu":  # slices x nodes x GPUs per node
        per_node = min(system.domain_size, system.n_chips)
        topology = f"1x{system.n_chips // per_node}x{per_node}"
        return list(_topology_devices("gpu", system.chip.name, topology))
    return list(_topology_devices("tpu", system.chip.name, system.tpu_topology))


def _shard_bytes(sds: jax.ShapeDtypeStruct) -> float:
    shape = sds.sharding.shard_shape(sds.shape)
    return float(math.prod(shape)) * dtype_bits(sds.dtype) / 8


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


PROGRESS_AFTER_S = 20.0  # say once that a compile is still running after this long (None: never; sweep workers)


@contextlib.contextmanager
def _still_compiling(what: str):
    """A line on stderr if compiling `what` takes longer than PROGRESS_AFTER_S: large contexts take minutes."""
    if PROGRESS_AFTER_S is None:
        yield
        return
    timer = threading.Timer(PROGRESS_AFTER_S, lambda: print(
        f"tracer: still compiling {what} after {PROGRESS_AFTER_S:.0f} s (large contexts and batches take minutes)",
        file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _compile(fn, args, mesh, strategy: Strategy, quirks: CompilerQuirks, vector_dtype: str, what: str = "a step",
             **jit_kw):
    start = time.perf_counter()
    platform = mesh.devices.flat[0].platform
    quiet = quiet_stderr() if quirks.logs else contextlib.nullcontext()
    try:
        with _still_compiling(what):
            with translator(mesh, strategy):
                lowered = jax.jit(fn, **jit_kw).lower(*args)
            with quiet:  # the GPU compiler logs its own estimates (rematerialization, scheduling limits) to stderr
                compiled = lowered.compile(compiler_options=dict(quirks.compile_options) or None)
    except jax.errors.JaxRuntimeError as err:  # the TPU compiler checks that its buffers fit the chip's HBM
        text = str(err)
        if "RESOURCE_EXHAUSTED" not in text:
            raise
        m = re.search(r"\(([\d.]+)([KMGT])\)", text)
        temp = float(m.group(1)) * 1024 ** "KMGT".index(m.group(2)) * 1024 if m else float("inf")
        raise DoesNotFit(f"does not fit: the {platform} compiler says "
                         f"{text.split('RESOURCE_EXHAUSTED:')[-1].strip().splitlines()[0]} (lower --batch or "
                         "--context, or see the figures of the emulated program with --compiler cpu)", temp) from None
    elapsed = time.perf_counter() - start
    cost = read_program(parse_module(compiled.as_text()), quirks.f32_as(vector_dtype), SCOPES, vector_dtype,
                        quirks.on_chip)
    mem = compiled.memory_analysis()
    xla_memory = XlaMemory(*(getattr(mem, f"{k}_size_in_bytes") for k in ("argument", "output", "alias", "temp")))
    return cost, xla_memory, elapsed


def check_splits(strategy: Strategy, mesh: dict, work: Workload):
    """The batch divides over the strategy's replicas, and the prompt and context over the devices that split
    sequences (the shardings check the rest as the steps are traced)."""
    for axis, length, what in (("seq", work.prompt, "prompt"), ("cache_seq", work.context, "context")):
        shards = strategy.ways(axis, mesh)
        if length % shards:
            raise ConfigError(f"{what} {length} does not divide over the {shards} devices that split sequences "
                              f"(strategy {strategy.name}); nearest that work: {nearest_multiples(length, shards)}")
    replicas = strategy.ways("batch", mesh)
    if work.batch % replicas:
        raise ConfigError(f"batch {work.batch} does not divide over {replicas} replicas (strategy {strategy.name}); "
                          f"nearest batches that work: {nearest_multiples(work.batch, replicas)}")


def _run_both(jobs: dict, concurrently: bool) -> dict:
    """Each job's result, by name; two at once where `concurrently` (XLA compiles outside the GIL): the first in a
    thread, the other here. Compilers that log to stderr run one at a time (quieting them swaps the process's fd 2,
    which two threads would interleave)."""
    if not concurrently or len(jobs) < 2:
        return {name: job() for name, job in jobs.items()}
    (first, a), (second, b) = jobs.items()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(a)
        other = b()
        return {first: pending.result(), second: other}


def compile_steps(cfg: ModelConfig, system: System, strategy: Strategy, work: Workload,
                  phases=("prefill", "decode"), compiler: str = "cpu") -> dict[str, CompiledStep]:
    """compiler: cpu, gpu or tpu (see choose_compiler)."""
    mesh = virtual_mesh(system, strategy, target_devices(system, compiler))
    check_splits(strategy, dict(mesh.shape), work)
    quirks = QUIRKS[compiler]
    graphdef, weights = abstract_weights(cfg, mesh, strategy)
    weight_bytes = _tree_bytes(weights)
    expert_bytes = _tree_bytes(nnx.filter_state(
        weights, lambda _, v: "experts" in v.get_metadata().get("logical_axes", ())))

    def arg(shape, dtype, axes, what):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding(mesh, strategy, axes, shape, what))

    with translator(mesh, strategy):
        shapes = cache_shapes(cfg, work.batch, work.context)
    cache = KVCache(tuple({name: arg(shape, cache_dtype(cfg, name), axes, f"KV cache {name}")
                           for name, (shape, axes) in stack.items()} for stack in shapes))
    cache_shardings = jax.tree.map(lambda x: x.sharding, cache)
    logits_sharding = sharding(mesh, strategy, ("batch", "vocab"), (work.batch, cfg.vocab_size), "logits")
    jobs = {}
    if "prefill" in phases:
        tokens = arg((work.batch, work.prompt), jnp.int32, ("batch", "seq"), "tokens")
        jobs["prefill"] = partial(
            _compile, partial(prefill, graphdef=graphdef, capacity=work.context), (weights, tokens), mesh, strategy,
            quirks, cfg.dtype, what=f"the prefill step of {cfg.name} (batch {work.batch}, prompt {work.prompt})",
            out_shardings=(logits_sharding, cache_shardings))
    if "decode" in phases:
        many = work.queries > 1  # speculative verification: [B, T] tokens, logits at every position
        tokens = arg((work.batch, work.queries) if many else (work.batch,), jnp.int32,
                     ("batch", None) if many else ("batch",), "tokens")
        out = sharding(mesh, strategy, ("batch", "vocab"), (work.tokens("decode"), cfg.vocab_size), "logits")
        positions = f" x {work.queries} positions" if many else ""
        jobs["decode"] = partial(
            _compile, partial(decode, graphdef=graphdef), (weights, cache, tokens, tokens), mesh, strategy, quirks,
            cfg.dtype, what=f"the decode step of {cfg.name} (batch {work.batch}{positions}, context {work.context})",
            donate_argnums=(1,), out_shardings=(out, cache_shardings))
    steps = {}
    for name, (cost, mem, secs) in _run_both(jobs, concurrently=not quirks.logs).items():
        steps[name] = CompiledStep(cost, weight_bytes, _tree_bytes(cache), expert_bytes, mem, compiler, secs)
    return steps
