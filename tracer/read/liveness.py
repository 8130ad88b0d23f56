"""Memory: a liveness walk over the scheduled program, in the program's own dtypes (the CPU compiler's temp figure
counts its f32 upcasts). Arguments are not allocated by the step; views and updates in place live in the buffer
they look into; the fused attention region's intermediates stay on chip."""

from collections import defaultdict
from collections.abc import Callable

from tracer.read.buffers import IN_PLACE, Buffers
from tracer.read.hlo import Computation


def owners(buffers: Buffers, comp: Computation) -> dict[str, list[set[str]]]:
    """Per instruction, per element of its result: the buffers it lives in."""
    found: dict[str, list[set[str]]] = {}

    def flat(name: str) -> set[str]:
        return set().union(*found.get(name, [set()]))

    for instr in comp.instrs:
        op, args = instr.opcode, instr.operands
        if op in ("parameter", "constant") or (buffers.is_view(instr) and not args):
            found[instr.name] = [set() for _ in instr.arrays]  # arguments are not allocated by the step
        elif op == "tuple":
            found[instr.name] = [flat(a) for a in args]
        elif op == "get-tuple-element":
            elements, index = found.get(args[0], [set()]), int(instr.attr("index") or 0)
            found[instr.name] = [elements[index] if index < len(elements) else flat(args[0])]
        elif op == "while":
            found[instr.name] = found.get(args[0], [set()])
        elif buffers.is_view(instr) or op in IN_PLACE:
            found[instr.name] = [flat(args[0])]
        elif (k := buffers.in_place_operand(instr)) is not None:
            found[instr.name] = [flat(args[k])]
        else:
            found[instr.name] = [{instr.name}]
    return found


def peak_live(buffers: Buffers, comp: Computation, is_entry: bool,
              region: Callable[[Computation], set[str]]) -> tuple[float, float]:
    """(peak bytes of buffers allocated by `comp`, bytes of its results that it allocated). `region`: the fused
    attention region of a computation."""
    lives_in = owners(buffers, comp)

    def flat(name: str) -> set[str]:
        return set().union(*lives_in.get(name, [set()]))

    members, users = region(comp), comp.users()
    last_use = {i.name: idx for idx, i in enumerate(comp.instrs) if lives_in[i.name] == [{i.name}]}  # unused: die
    for idx, instr in enumerate(comp.instrs):
        for op in instr.operands:
            for buf in flat(op):
                last_use[buf] = idx
    results = flat(comp.root.name)
    frees = defaultdict(list)
    for buf, idx in last_use.items():
        if buf not in results:
            frees[idx].append(buf)
    live = peak = 0.0
    for idx, instr in enumerate(comp.instrs):
        inner = 0.0
        if instr.opcode == "while":
            inner = peak_live(buffers, buffers.module.computations[instr.called("body")], False, region)[0]
        internal = instr.name in members and all(u.name in members for u in users.get(instr.name, []))
        if lives_in[instr.name] == [{instr.name}] and not internal:
            live += buffers.size(instr)
        peak = max(peak, live + inner)
        for buf in frees.get(idx, []):
            live -= buffers.size(comp.by_name[buf])
    allocated_results = sum(buffers.size(comp.by_name[b]) for b in results)
    return peak, allocated_results if is_entry else 0.0
