"""Collectives: each one's wire bytes follow from its op, shape and replica groups (the compiler's cost analysis
gives none), gathered by (op, groups, size, dtype) with their executions per step and the parts they serve."""

from collections import defaultdict

from tracer.read.buffers import results
from tracer.read.hlo import Array, Computation, Instr, replica_groups
from tracer.read.values import Collective


def wire_bytes(op: str, n: int, operand_bytes: float, result_bytes: float) -> float:
    """Bytes each device sends for one collective over n devices (ring algorithms, scaling-book GPU chapter)."""
    if op == "all-reduce":
        return 2 * (n - 1) / n * operand_bytes  # reduce-scatter then all-gather
    if op == "all-gather":
        return (n - 1) / n * result_bytes
    if op in ("reduce-scatter", "all-to-all"):
        return (n - 1) / n * operand_bytes
    return operand_bytes  # collective-permute: the whole operand goes to one peer


class Collectives:
    def __init__(self, buffers):
        self.buffers = buffers
        self.seen: dict[tuple, list] = defaultdict(lambda: [0, 0.0])  # key -> [executions, wire bytes]
        self.scopes: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))

    def add(self, comp: Computation, instr: Instr, times: int, scope: str):
        op = instr.opcode.removesuffix("-start")
        groups = replica_groups(instr, self.buffers.module.num_partitions)
        n = max(len(g) for g in groups)
        if n == 1:
            return  # a group of one moves nothing

        def wire(arrays):  # what crosses the links, wherever the buffers live (TPU collectives may use VMEM)
            return sum(self.buffers.array_bytes(Array(a.dtype, a.dims)) for a in arrays)

        operand = sum(wire(comp.by_name[o].arrays) for o in instr.operands if o in comp.by_name)
        result = wire(results(comp, instr))
        moved = result if op == "all-gather" else operand
        arrays = [a for o in instr.operands if o in comp.by_name for a in comp.by_name[o].arrays]
        dtype = arrays[0].dtype if arrays else "?"  # as compiled (the CPU compiler's f32 counts at bf16 width)
        key = (op, n, tuple(tuple(g) for g in groups), moved, dtype)
        sent = times * wire_bytes(op, n, operand, result)
        self.seen[key][0] += times
        self.seen[key][1] += sent
        self.scopes[key][scope] += sent

    def result(self) -> tuple[Collective, ...]:
        return tuple(Collective(op, n, groups, count, moved, wire, tuple(sorted(self.scopes[key].items())), dtype)
                     for key, (count, wire) in sorted(self.seen.items(), key=lambda kv: kv[0][:2])
                     for op, n, groups, moved, dtype in [key])
