"""What the reader returns: frozen values that add and scale (as jax.experimental.roofline's do).

A step is a list of kernel records; each carries its cost per execution and how often it runs, and the step's cost
is their sum, so the total and the breakdown by part of the model cannot disagree.
"""

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Cost:
    """Per device: FLOPs by the precision they run in, and HBM bytes read and written."""

    flops_by_dtype: tuple[tuple[str, float], ...] = ()  # (bfloat16, float8, int8, float4, float32) -> FLOPs, sorted
    bytes_read: float = 0.0
    bytes_written: float = 0.0
    argument_bytes: float = 0.0  # of bytes_read: read of the step's arguments (weights, caches), not computed values

    @staticmethod
    def zeros() -> "Cost":
        return Cost()

    @staticmethod
    def of(flops: dict[str, float], read: float = 0.0, written: float = 0.0, arguments: float = 0.0) -> "Cost":
        return Cost(tuple(sorted((k, float(v)) for k, v in flops.items() if v)), read, written, arguments)

    def __add__(self, other: "Cost") -> "Cost":
        flops = defaultdict(float, self.flops_by_dtype)
        for dtype, value in other.flops_by_dtype:
            flops[dtype] += value
        return Cost.of(flops, self.bytes_read + other.bytes_read, self.bytes_written + other.bytes_written,
                       self.argument_bytes + other.argument_bytes)

    def __mul__(self, times: float) -> "Cost":
        """The cost of `times` executions (a loop's trip count)."""
        return Cost(tuple((k, v * times) for k, v in self.flops_by_dtype), self.bytes_read * times,
                    self.bytes_written * times, self.argument_bytes * times)

    __rmul__ = __mul__

    @property
    def flops(self) -> float:
        return sum(v for _, v in self.flops_by_dtype)

    @property
    def hbm_bytes(self) -> float:
        return self.bytes_read + self.bytes_written

    def __bool__(self) -> bool:
        return bool(self.flops_by_dtype or self.bytes_read or self.bytes_written)


KINDS = ("matmul", "attention", "elementwise", "reduce", "gather", "scatter", "collective", "copy", "other")


@dataclass(frozen=True)
class Kernel:
    """One kernel of a step, per execution: what it is, where in the model it comes from, what it costs."""

    name: str  # the instruction, or a fused kernel's first member
    kind: str  # one of KINDS
    scope: str  # the part of the model (models.scopes)
    count: int  # executions per step (loop trip counts included)
    cost: Cost  # per execution
    shape: tuple[int, int, int] | None = None  # a matmul's (M, N, K), batch dims folded into M (several: rules.joined)
    dtypes: tuple[str, ...] = ()  # of its matmul's operands as stored, else of its result
    members: int = 1  # compiled kernels it stands for (a fused kernel: more than one)
    launches: int = 0  # executions a record summed from several kernels stands for (tracer.derive); 0: its count
    gemms: int = 1  # a matmul's batch: its shape's M holds this many GEMMs' rows (an expert each, grouped experts)

    @property
    def total(self) -> Cost:
        return self.cost * self.count


def total(kernels) -> Cost:
    return sum((k.total for k in kernels), Cost.zeros())


def by_scope(kernels) -> dict[str, Cost]:
    """Part of the model -> the cost of its kernels (parts with none left out)."""
    parts: dict[str, Cost] = defaultdict(Cost.zeros)
    for k in kernels:
        parts[k.scope] += k.total
    return {part: cost for part, cost in sorted(parts.items()) if cost}


@dataclass(frozen=True)
class Collective:
    op: str  # all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute
    group_size: int
    groups: tuple[tuple[int, ...], ...]  # device positions in the mesh; which links a group spans
    count: int  # executions per step (loop trip counts included)
    bytes: float  # array bytes moved per execution: the all-reduce operand, the all-gather result, ...
    wire_bytes_per_device: float  # sent by each device per step, all executions together
    scopes: tuple[tuple[str, float], ...] = ()  # (part of the model, its wire bytes)
    dtype: str = ""  # of the values sent, as the compiler wrote them

    def to_dict(self) -> dict:
        return {"op": self.op, "dtype": self.dtype, "group_size": self.group_size, "count": self.count,
                "wire_bytes_per_device": self.wire_bytes_per_device}


@dataclass(frozen=True)
class ProgramCost:
    """One device's step, read from its compiled program: its kernels as compiled and as serving engines fuse them
    (tracer.read.fusion), its memory and its collectives."""

    kernels: tuple[Kernel, ...]  # as the program's own kernels run
    fused: tuple[Kernel, ...]  # as serving engines' fused kernels run: the same FLOPs, fewer bytes
    peak_live_bytes: float  # buffers the step allocates (not its arguments), at their peak
    output_bytes: float  # results that are not donated arguments updated in place
    collectives: tuple[Collective, ...]
    notes: tuple[str, ...]
    expert_weight_bytes: float = 0.0  # of hbm_bytes: the routed experts' weights read (the step's arguments)

    @cached_property
    def total(self) -> Cost:
        return total(self.kernels)

    @property
    def flops(self) -> float:
        return self.total.flops

    @property
    def flops_by_dtype(self) -> dict[str, float]:
        return dict(self.total.flops_by_dtype)

    @property
    def hbm_bytes(self) -> float:
        return self.total.hbm_bytes

    @property
    def fused_hbm_bytes(self) -> float:
        return total(self.fused).hbm_bytes

    @property
    def comm_bytes(self) -> float:
        return sum(c.wire_bytes_per_device for c in self.collectives)

    def by_scope(self) -> dict[str, Cost]:
        return by_scope(self.kernels)

    def fused_by_scope(self) -> dict[str, Cost]:
        return by_scope(self.fused)
