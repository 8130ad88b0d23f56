"""The attention core (the model's fused scope, models.scopes.Scopes.fused) stands for a fused flash kernel: its
scores stay on chip, so only its inputs and outputs count as HBM traffic and its intermediates take no memory."""

from tracer.read.buffers import NO_TRAFFIC, Buffers
from tracer.read.fusion import Groups
from tracer.read.hlo import Computation


def region(buffers: Buffers, comp: Computation, scope: str) -> set[str]:
    """Instructions of the fused scope, plus the ones the compiler stripped of metadata (CPU's rewritten dots)
    that feed it or are fed by it, directly or through views."""
    members = {i.name for i in comp.instrs if f"/{scope}/" in i.op_name + "/" and not buffers.is_view(i)}
    if not members:
        return members
    users = comp.users()
    orphans = [i for i in comp.instrs if not i.op_name and not buffers.is_view(i) and i.opcode not in NO_TRAFFIC]
    grown = True
    while grown:  # neighbours through views, but not through a loop tuple (it would join unrelated work)
        grown = False
        for instr in orphans:
            if instr.name in members:
                continue
            near = {buffers.buffer(comp, op) for op in instr.operands} | buffers.consumers(comp, users, instr.name)
            if near & members:
                members.add(instr.name)
                grown = True
    return members


def kernels(buffers: Buffers, comp: Computation, members: set[str]) -> dict[str, str]:
    """The region's fused kernels: each connected part of it (one layer's attention core where layers are not a
    loop), as member -> kernel."""
    groups = Groups(i.name for i in comp.instrs if i.name in members)
    for instr in comp.instrs:
        if instr.name in members:
            for op in instr.operands:
                if (source := buffers.source(comp, op)) in groups.parent:
                    groups.join(instr.name, source)
    return groups.kernel_of()
