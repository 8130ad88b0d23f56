"""What a step is, apart from how it is compiled: the workload it runs, and one device's figures read from its
compiled program (tracer.compile makes them; tracer.roofline prices them without importing jax)."""

import dataclasses
from dataclasses import dataclass

from tracer.read import ProgramCost


@dataclass(frozen=True)
class Workload:
    batch: int  # sequences in a step
    prompt: int  # prefill tokens per sequence
    context: int  # KV cache capacity; a decode step attends over all of it
    queries: int = 1  # decode: positions each sequence runs a step (speculative decoding verifies K drafted: K + 1)

    def tokens(self, phase: str) -> int:
        """Tokens the step runs: the prompts' (prefill), or each sequence's query positions (decode)."""
        return self.batch * (self.prompt if phase == "prefill" else self.queries)


@dataclass(frozen=True)
class XlaMemory:
    """Compiled.memory_analysis(), bytes per device, as the compiler reports them (tracer.quirks: which to trust)."""

    argument: int
    output: int
    alias: int
    temp: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Provenance:
    """Where a step's figures come from: its own compiled program, or derived from others (tracer.derive)."""

    how: str  # "compiled" or "derived"
    anchors: tuple[tuple[int, int], ...] = ()  # derived: the (batch, context) of the compiled steps it comes from
    held_out: tuple | None = None  # derived: (batch, context, worst relative miss, of which figure) of the check

    def to_dict(self) -> dict:
        out: dict = {"how": self.how}
        if self.how == "derived":
            out["from"] = [list(a) for a in self.anchors]
            if self.held_out is not None:
                b, c, miss, figure = self.held_out
                out["held_out"] = {"batch": b, "context": c, "worst_miss": miss, "figure": figure}
        return out


COMPILED = Provenance("compiled")


@dataclass(frozen=True)
class CompiledStep:
    """One compiled step, per device."""

    cost: ProgramCost
    weight_bytes: float  # weight shards held by one device
    kv_cache_bytes: float  # KV cache shard held by one device (an argument in decode, a result in prefill)
    expert_weight_bytes: float  # of weight_bytes: the routed experts' (with their scales and biases)
    xla_memory: XlaMemory  # Compiled.memory_analysis() as the compiler reports it
    compiler: str
    compile_s: float
    provenance: Provenance | None = None  # None: compiled (COMPILED)
