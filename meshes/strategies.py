"""Sharding strategies as values: a mesh layout and one rules table from logical axes to mesh axes.

Comparing strategies means swapping this value and nothing else; model code only speaks logical names.

A strategy's mesh lists its axes outer to inner, each sized by an integer, "domain" (the system's scale-up domain,
an NVLink node or rack), "domain/k", or "rest" (the chips left over). Devices are laid out in id order, so the inner
axes stay inside one scale-up domain. A rule maps a logical axis to one mesh axis or a tuple of them; `weight_rules`
override the rules for weights only (FSDP shards weights along their hidden axis, not the activations').
"""

import dataclasses
import math
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from base.inputs import ConfigError, is_int, read_toml
from meshes.systems import System

Target = str | tuple[str, ...] | None

# Megatron-style tensor parallelism: heads and the MLP's hidden split over 'tp', the vocabulary too (embedding
# and LM head), and each routed expert's hidden split likewise (tensor-parallel experts); sequences split over
# 'dp' replicas. The KV cache follows: kv heads over 'tp', then batch over 'dp'. MLA's latent cache has no head
# axis and is replicated across 'tp'.
TENSOR_RULES = (("batch", "dp"), ("heads", "tp"), ("kv_heads", "tp"), ("mlp", "tp"), ("vocab", "tp"),
                ("expert_mlp", "tp"))


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    mesh: tuple[tuple[str, int | str], ...]  # (axis, size) outer to inner
    rules: tuple[tuple[str, Target], ...]
    weight_rules: tuple[tuple[str, Target], ...] = ()
    # collectives (by op) that two micro-batches in flight hide under each other's compute, as DeepSeek's and
    # SGLang's two-batch overlap hides expert parallelism's all-to-alls: a step's time holds only what of them
    # outlasts its kernels
    overlap: tuple[str, ...] = ()
    # the mesh axis whose groups are a pipeline's stages (layers in stages, micro-batches in flight); "" for none.
    # A stage runs the rest of the mesh's axes (`stage`) over its own chips.
    pipeline: str = ""

    @property
    def stage(self) -> "Strategy":
        """What one pipeline stage runs: this strategy without the pipeline's axis."""
        return dataclasses.replace(self, name=f"{self.name} stage", mesh=tuple(a for a in self.mesh
                                                                                if a[0] != self.pipeline),
                                   pipeline="")

    def mesh_shape(self, system: System) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for axis, size in self.mesh:
            if size == "rest":
                continue
            if isinstance(size, str):
                part, domain = size.removeprefix("domain"), min(system.domain_size, system.n_chips)
                if part and domain % int(part[1:]):
                    raise ConfigError(f"strategy {self.name}: axis {axis} = {size!r} does not divide the "
                                      f"{domain}-chip domain of {system.name}; use a divisor of {domain}")
                size = domain // (int(part[1:]) if part else 1)
            if size < 1:
                raise ConfigError(f"strategy {self.name}: axis {axis} has no devices on {system.name}")
            sizes[axis] = size
        fixed = math.prod(sizes.values())
        if system.n_chips % fixed:
            raise ConfigError(f"strategy {self.name}: its groups of {fixed} ({sizes}) do not divide the "
                              f"{system.n_chips} chips of {system.name}")
        if fixed != system.n_chips and all(size != "rest" for _, size in self.mesh):
            raise ConfigError(f"strategy {self.name}: its mesh {sizes} holds {fixed} of the {system.n_chips} chips "
                              f"of {system.name}; size the axes to use every chip, or add an axis = \"rest\"")
        return {axis: sizes.get(axis, system.n_chips // fixed) for axis, _ in self.mesh}

    def replicas(self, system: System) -> int:
        """Independent copies of the model on the system: the ways its sequences split."""
        return self.ways("batch", self.mesh_shape(system))

    def axes(self, logical: str | None, weights: bool = False) -> tuple[str, ...]:
        """The mesh axes a logical axis is split over."""
        if logical is None:
            return ()
        if logical == "tokens" and logical not in dict(self.rules):  # a sequence's shards, then the batch's
            seq = self.axes("seq", weights)
            return seq + tuple(a for a in self.axes("batch", weights) if a not in seq)
        if "-" in logical and logical not in dict(self.rules):  # "batch-experts": batch's axes that experts lack
            base, minus = logical.split("-", 1)
            return tuple(a for a in self.axes(base, weights) if a not in self.axes(minus, weights))
        target = dict(self.weight_rules).get(logical, dict(self.rules).get(logical)) if weights else dict(
            self.rules).get(logical)
        return () if target is None else (target,) if isinstance(target, str) else tuple(target)

    def spec(self, logical_axes, weights: bool = False, prefer: str | None = None) -> PartitionSpec:
        """Logical axes -> PartitionSpec. Two logical axes may not claim one mesh axis, unless `prefer` names the
        one that keeps it (the others give it up: experts taking over the devices that held token groups)."""
        mesh_axes = [self.axes(a, weights) for a in logical_axes]
        if prefer in logical_axes:
            kept = set(mesh_axes[list(logical_axes).index(prefer)])
            mesh_axes = [m if a == prefer else tuple(x for x in m if x not in kept)
                         for a, m in zip(logical_axes, mesh_axes, strict=True)]
        used = [x for m in mesh_axes for x in m]
        if len(used) != len(set(used)):
            raise ConfigError(f"strategy {self.name}: axes {tuple(logical_axes)} map twice onto one mesh axis "
                              f"({used}); give each logical axis of an array its own mesh axes")
        return PartitionSpec(*(None if not m else m[0] if len(m) == 1 else m for m in mesh_axes))

    def ways(self, logical: str, shape: dict[str, int], weights: bool = False, shared: str | None = None) -> int:
        """Shards of a logical axis (with `shared`: over the mesh axes it has in common with that one)."""
        axes = self.axes(logical, weights)
        if shared is not None:
            axes = tuple(a for a in axes if a in self.axes(shared, weights))
        return math.prod(shape[a] for a in axes)


STRATEGIES = {s.name: s for s in (
    Strategy("tp", "tensor parallel across one scale-up domain (8 GPUs in a node, 72 in an NVL72)",
             (("dp", "rest"), ("tp", "domain")), TENSOR_RULES),
    Strategy("tp-dp", "tensor parallel inside each group of 8, independent replicas across groups",
             (("dp", "rest"), ("tp", 8)), TENSOR_RULES),
    Strategy("ep", "experts spread over every device of the scale-up domain; attention, dense layers and LM head "
             "data-parallel (each device serves its own sequences), as large-EP servers run on an NVL72",
             (("dp", "rest"), ("ep", "domain")), (("batch", ("dp", "ep")), ("experts", "ep"))),
    Strategy("wide-ep", "wide expert parallelism: experts spread over every device of the system, across its nodes "
             "(h200x8*4: 32 GPUs); attention, dense layers and LM head data-parallel; two micro-batches in flight, "
             "each one's all-to-alls hidden under the other's compute (two-batch overlap), as large MoE models are "
             "served across nodes (DeepSeek's inference system, SGLang's large-scale EP)",
             (("ep", "rest"),), (("batch", "ep"), ("experts", "ep")), overlap=("all-to-all",)),
    Strategy("tp-ep", "attention, dense layers and LM head tensor-parallel in groups of 8; experts spread over "
             "every device of the scale-up domain",
             (("dp", "rest"), ("ep", "domain/8"), ("tp", 8)),
             (("batch", ("dp", "ep")), ("heads", "tp"), ("kv_heads", "tp"), ("mlp", "tp"), ("vocab", "tp"),
              ("experts", ("ep", "tp")))),
    Strategy("pp", "pipeline parallel: the layers in stages of one device each, in order, every sequence passing "
             "through them all; as many micro-batches in flight as stages",
             (("pp", "rest"), ("tp", 1)), tuple(r for r in TENSOR_RULES if r[0] != "batch"), pipeline="pp"),
    Strategy("tp-pp", "tensor parallel inside each scale-up domain (node), the layers in stages across the domains "
             "(pipeline parallel over the scale-out network), as many micro-batches in flight as stages: how a model "
             "too large for one node is served across nodes",
             (("pp", "rest"), ("tp", "domain")), tuple(r for r in TENSOR_RULES if r[0] != "batch"), pipeline="pp"),
    Strategy("sp", "sequences split over the scale-up domain: prefill's prompt positions and decode's KV cache "
             "positions spread over its devices, weights replicated, as context parallelism serves long contexts",
             (("dp", "rest"), ("sp", "domain")), (("batch", "dp"), ("seq", "sp"), ("cache_seq", "sp"))),
    Strategy("tp-sp", "tensor parallel in groups of 8, sequences' positions (prompt and KV cache) striped over the "
             "groups: context parallelism over the rest of an NVL72, or across the nodes of a cluster",
             (("sp", "rest"), ("tp", 8)),
             tuple(r for r in TENSOR_RULES if r[0] != "batch") + (("seq", "sp"), ("cache_seq", "sp"))),
    Strategy("fsdp", "weights sharded over the scale-up domain along their hidden axis and gathered layer by layer "
             "where they are used; sequences spread over every device",
             (("dp", "rest"), ("fsdp", "domain")), (("batch", ("dp", "fsdp")),),
             weight_rules=(("embed", "fsdp"),)),
)}


def get_strategy(name: "str | Strategy") -> Strategy:
    """A strategy by name, or from a TOML file of rules (see load_strategy), or one given (a pipeline's stage)."""
    if isinstance(name, Strategy):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"strategy must be a name or a .toml file's path, got {name!r}; choose one of: "
                          f"{', '.join(STRATEGIES)}")
    if name.endswith(".toml"):
        return load_strategy(name)
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}, or a .toml file of "
                          "rules (see meshes/examples/ep.toml)")
    return STRATEGIES[name]


def virtual_mesh(system: System, strategy: Strategy, devices: list | None = None) -> Mesh:
    """A mesh of devices (emulated CPU ones unless given) in id order, reshaped to the strategy's axes: the inner axes
    hold consecutive ids, so they sit inside one scale-up domain (System.node_of) and use the links they would use
    on the real topology."""
    shape = strategy.mesh_shape(system)
    devices = jax.devices() if devices is None else devices
    if len(devices) < system.n_chips:
        raise ConfigError(f"{system.name} needs {system.n_chips} devices but jax has {len(devices)}: set "
                          f"TRACER_CPU_DEVICES={system.n_chips} in the environment (and import tracer before "
                          "anything else starts jax)")
    grid = np.array(devices[: system.n_chips]).reshape(tuple(shape.values()))
    return Mesh(grid, tuple(shape), axis_types=(AxisType.Auto,) * len(shape))


def nearest_multiples(value: int, step: int) -> str:
    lower, upper = value // step * step, -(-value // step) * step
    return " or ".join(str(b) for b in (lower, upper) if b > 0)


def sharding(mesh: Mesh, strategy: Strategy, logical_axes, shape, what: str, weights: bool = False,
             prefer: str | None = None) -> NamedSharding:
    """The NamedSharding of an array, after checking that every sharded dimension divides."""
    spec = list(strategy.spec(logical_axes, weights, prefer))
    for i, (size, axis, target) in enumerate(zip(shape, logical_axes, spec, strict=True)):
        if target is None:
            continue
        ways = math.prod(mesh.shape[a] for a in ((target,) if isinstance(target, str) else target))
        if size % ways == 0:
            continue
        if (axis == "kv_heads" and ways % size == 0) or axis in ("seq", "cache_seq"):
            spec[i] = None  # fewer kv heads than devices: weights replicated; decode's one position, or a window's
            continue  # few slots: kept whole on every device
        if axis == "batch":
            raise ConfigError(f"batch {size} does not divide over {ways} replicas ({target} in strategy "
                              f"{strategy.name}); nearest batches that work: {nearest_multiples(size, ways)}")
        raise ConfigError(f"{what}: its {axis} dimension ({size} values) does not divide over {target}={ways} "
                          f"(strategy {strategy.name}); "
                          f"choose a strategy whose groups divide {size}, e.g. tp-dp")
    return NamedSharding(mesh, PartitionSpec(*spec))


# Logical axes of the arrays the models use, to check a strategy file's rules before compiling anything.
WEIGHT_ARRAYS = (("vocab", "embed"), ("embed", "vocab"), ("embed", "heads", "head_dim"),
                 ("embed", "kv_heads", "head_dim"), ("heads", "embed"), ("embed", "mlp"), ("mlp", "embed"),
                 ("experts", "embed", "expert_mlp"), ("experts", "expert_mlp", "embed"), ("embed", "latent"),
                 ("latent", "heads", "head_dim"))
ACTIVATION_ARRAYS = (("batch", "seq", "embed"), ("batch", "seq", "heads"), ("batch", "seq", "kv_heads"),
                     ("batch", "seq", "mlp"), ("batch", "vocab"), ("batch", "cache_seq", "kv_heads", "head_dim"),
                     ("batch", "cache_seq", "latent"), ("batch", "experts", "expert_mlp"))
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
LOGICAL_AXES = sorted({a for arr in WEIGHT_ARRAYS + ACTIVATION_ARRAYS for a in arr} | {"layers", "q_lora"})


def load_strategy(path: str) -> Strategy:
    """A strategy from a TOML file: name, description, [mesh] axis = size (outer to inner: an integer, "domain",
    "domain/k" or "rest"), [rules] logical axis = mesh axis or [mesh axes], optional [weight_rules], optional
    overlap = [collective ops hidden under compute by two micro-batches]."""
    from pathlib import Path

    where = f"strategy file {path}"
    data = read_toml(path, where, f"; give a .toml strategy file or one of {', '.join(STRATEGIES)}")
    unknown = set(data) - {"name", "description", "mesh", "rules", "weight_rules", "overlap"}
    tables = ("mesh", "rules") + (("weight_rules",) if "weight_rules" in data else ())
    if unknown or not all(isinstance(data.get(t), dict) for t in tables) or not data.get("mesh"):
        raise ConfigError(f"{where}: needs a non-empty [mesh] table and a [rules] table (and may have name, "
                          f"description, a [weight_rules] table, overlap)"
                          f"{'; unknown keys: ' + ', '.join(sorted(unknown)) if unknown else ''}")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{where}: {key} must be a string, got {data[key]!r}")
    mesh = tuple(data["mesh"].items())
    for axis, size in mesh:
        ok = (is_int(size) and size > 0) or size in ("domain", "rest") or (
            isinstance(size, str) and size.startswith("domain/") and size[7:].isascii() and size[7:].isdigit()
            and int(size[7:]) > 0)
        if not ok:
            raise ConfigError(f"{where}: mesh axis {axis} = {size!r}; a size is a positive integer, \"domain\", "
                              "\"domain/k\" or \"rest\"")
    if sum(1 for _, size in mesh if size == "rest") > 1:
        raise ConfigError(f"{where}: at most one mesh axis may be \"rest\"")

    def rules(table: str) -> tuple:
        out = []
        for logical, target in data.get(table, {}).items():
            if logical not in LOGICAL_AXES:
                raise ConfigError(f"{where}: [{table}] {logical} is not a logical axis; known: "
                                  f"{', '.join(LOGICAL_AXES)}")
            if not (isinstance(target, str) or (isinstance(target, list) and all(isinstance(t, str) for t in target))):
                raise ConfigError(f"{where}: [{table}] {logical} = {target!r}; a rule is a mesh axis's name or a list "
                                  f"of them, e.g. {logical} = \"{mesh[-1][0]}\"")
            targets = (target,) if isinstance(target, str) else tuple(target)
            missing = [t for t in targets if t not in dict(mesh)]
            if missing or not targets:
                raise ConfigError(f"{where}: [{table}] {logical} = {target!r} names no mesh axis of [mesh] "
                                  f"({', '.join(dict(mesh))})")
            out.append((logical, target if isinstance(target, str) else targets))
        return tuple(out)

    overlap = data.get("overlap", [])
    if not isinstance(overlap, list) or any(op not in COLLECTIVES for op in overlap):
        raise ConfigError(f"{where}: overlap = {overlap!r}; a list of collectives two micro-batches hide under "
                          f"compute, from {', '.join(COLLECTIVES)} (e.g. overlap = [\"all-to-all\"])")
    strategy = Strategy(data.get("name", Path(path).stem), data.get("description", f"from {path}"), mesh,
                        rules("rules"), rules("weight_rules"), tuple(overlap))
    for arrays, weights in ((WEIGHT_ARRAYS, True), (ACTIVATION_ARRAYS, False)):
        for arr in arrays:
            try:
                strategy.spec(arr, weights, prefer="experts" if "experts" in arr and "batch" in arr else None)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
    return strategy
