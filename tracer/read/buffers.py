"""Buffers and views: how many bytes of HBM an instruction reads and writes, in the program's own dtypes.

- the CPU compiler upcasts bf16 to f32 (weights, activations, all-reduces): with `f32_as` set, f32 buffers are
  counted at the program's own width and pure conversions count as no traffic;
- slicing a loop's stacked weights or cache is materialised as a copy on CPU, where GPU and TPU compilers read the
  slice in place: slices are counted as views, read once by their consumer;
- a fusion that only changes layout (transposes a weight for the CPU's dot, say) is folded into its consumer,
  as GPU gemms and TPU layout assignment take either layout;
- the CPU compiler may re-lay a whole step argument (an fp8 KV cache) in its preferred layout on entry and copy
  it back on exit: a layout-only copy of an argument, or into the step's result, is not counted, as a compiler
  for the chip keeps the argument's own layout;
- buffers in on-chip memory spaces (TPU VMEM and SMEM) are no HBM traffic.
"""

from collections import defaultdict

from tracer.read.hlo import Array, Computation, Instr, Module
from tracer.read.rules import is_gemm, is_marker

SLICES = {"slice", "dynamic-slice"}
VIEWS = {"bitcast", "reshape", "get-tuple-element", "tuple", "parameter", "constant", "add-dependency",
         "domain"} | SLICES
NO_TRAFFIC = VIEWS | {"while", "call", "conditional", "after-all", "partition-id", "replica-id", "iota",
                      "all-reduce-done", "all-gather-done", "collective-permute-done", "async-done", "opt-barrier",
                      "copy-done",  # an async copy moves its bytes at its start
                      "async-start", "async-update", "get-dimension-size"}  # the computation it calls is walked
LAYOUT = {"transpose", "copy"}  # layout changes inside a fusion: folded into the consumer by GPU/TPU compilers
IN_PLACE = {"dynamic-update-slice", "scatter"}  # operand 0 is updated where it lies


def results(comp: Computation, instr: Instr) -> list[Array]:
    """What an instruction computes: an async collective's -start returns (operands, results, context...), a
    library gemm (result, workspace)."""
    if is_gemm(instr) and instr.is_tuple:
        return instr.arrays[:1]
    if instr.opcode.endswith("-start") and instr.is_tuple:
        n = sum(len(comp.by_name[o].arrays) for o in instr.operands if o in comp.by_name)
        return instr.arrays[n:2 * n]
    return instr.arrays


class Buffers:
    """The byte rules of one program. f32_as: the width the CPU compiler's f32 stands for (None elsewhere);
    on_chip: memory spaces that are not device memory; in_place: the named scopes whose gathers are read in place
    by their consumer (a row's expert weights, the cached rows sparse attention chose)."""

    def __init__(self, module: Module, f32_as: str | None, on_chip: frozenset, in_place: tuple[str, ...]):
        self.module, self.f32_as, self.on_chip = module, f32_as, on_chip
        self.gathered_in_place = tuple(f"/{scope}/" for scope in in_place)
        self.boundary = self.boundary_copies(module.computations[module.entry])

    @staticmethod
    def boundary_copies(entry: Computation) -> set[str]:
        """Copies in the entry computation that only change the layout of an argument, or of a value the step
        returns (same dtype, same dims)."""
        users = entry.users()
        out = set()
        for instr in entry.instrs:
            if instr.opcode != "copy" or not instr.operands or instr.operands[0] not in entry.by_name:
                continue
            source = entry.by_name[instr.operands[0]]
            same = [(a.dtype, a.dims) for a in source.arrays] == [(a.dtype, a.dims) for a in instr.arrays]
            readers = users.get(instr.name, [])
            returned = instr.is_root or (readers and all(u.is_root and u.opcode == "tuple" for u in readers))
            if same and (source.opcode == "parameter" or returned):
                out.add(instr.name)
        return out

    def array_bytes(self, a: Array) -> float:
        if a.space in self.on_chip:
            return 0.0
        if self.f32_as and a.dtype == "f32":
            return Array(self.f32_as, a.dims).bytes
        return a.bytes

    def width(self, a: Array) -> float:
        """Bytes per element, in the program's own dtypes."""
        return self.array_bytes(a) / max(a.elements, 1)

    def size(self, instr: Instr) -> float:
        return sum(self.array_bytes(a) for a in instr.arrays)

    def is_view(self, instr: Instr) -> bool:
        """No data moves: reinterpretations, slices read in place, (on CPU) the compiler's own upcasts and its
        layout changes of whole arguments and results."""
        if instr.opcode in VIEWS or (self.f32_as and instr.opcode == "convert") or instr.name in self.boundary:
            return True
        if is_marker(instr):
            return True
        if instr.opcode == "gather" and any(s in instr.op_name + "/" for s in self.gathered_in_place):
            return True
        if instr.opcode == "fusion":
            body = self.module.computations[instr.called("calls")]
            return all(self.is_view(i) or i.opcode in LAYOUT or self.index_math(i) for i in body.instrs)
        return instr.opcode == "transpose"

    @staticmethod
    def index_math(instr: Instr) -> bool:
        """Arithmetic on a few integers: the offsets of a slice (a device's share of a replicated weight)."""
        return all(a.dtype[0] in "sup" and a.elements <= 64 for a in instr.arrays) and bool(instr.arrays)

    def consumers(self, comp: Computation, users: dict, name: str) -> set[str]:
        """Non-view instructions that read `name`, looking through views."""
        found = set()
        for user in users.get(name, []):
            found |= self.consumers(comp, users, user.name) if self.is_view(user) else {user.name}
        return found

    def stored(self, comp: Computation, name: str, outers: tuple = ()) -> Array | None:
        """The narrowest array behind value `name`, following views, slices, conversions and layout changes back
        to the stored buffer (into view fusions and out through their parameters): a consumer of an fp8 weight
        that the CPU compiler upcast reads fp8 bytes. `outers`: (computation, fusion) pairs entered so far."""
        instr = comp.by_name.get(name)
        if instr is None or instr.is_tuple or not instr.arrays:
            return None
        own, inner = instr.arrays[0], None
        if instr.opcode == "parameter" and outers:
            outer_comp, fusion = outers[-1]
            inner = self.stored(outer_comp, fusion.operands[int(instr.args)], outers[:-1])
        elif instr.opcode == "fusion" and self.is_view(instr):
            body = self.module.computations[instr.called("calls")]
            inner = self.stored(body, body.root.name, (*outers, (comp, instr)))
        elif instr.opcode == "fusion":  # computes, then narrows on its way out (activations quantized to fp8)
            inner = self.narrowed(instr)
        elif (self.is_view(instr) or instr.opcode in LAYOUT) and instr.operands and instr.opcode not in (
                "parameter", "get-tuple-element", "tuple", "constant"):
            inner = self.stored(comp, instr.operands[0], outers)
        return inner if inner is not None and self.width(inner) < self.width(own) else own

    def narrowed(self, fusion: Instr) -> Array | None:
        """The narrowest dtype a fusion's result passes through between its last computation and its output: a
        real program stores it at that width (the CPU compiler converts fp8 back to f32 for its dot)."""
        body = self.module.computations[fusion.called("calls")]
        instr, best = body.root, None
        while instr.opcode in {"bitcast", "reshape", "convert", "copy", "transpose"} and not instr.is_tuple:
            operand = body.by_name[instr.operands[0]]
            if operand.arrays and (best is None or self.width(operand.arrays[0]) < self.width(best)):
                best = operand.arrays[0]
            instr = operand
        return best

    def read_size(self, comp: Computation, name: str) -> float:
        """Bytes a consumer reads of value `name`: its elements at the width it is stored in."""
        instr = comp.by_name[name]
        stored = self.stored(comp, name)
        if stored is None:
            return self.size(instr)
        return instr.arrays[0].elements * self.width(stored)

    def operand_read(self, comp: Computation, instr: Instr, index: int) -> float:
        """Bytes `instr` reads of operand `index`: a fusion that only slices a parameter reads just the slices."""
        operand = comp.by_name.get(instr.operands[index])
        if operand is None:
            return 0.0
        if instr.opcode in IN_PLACE and index == 0:
            return 0.0
        if instr.opcode == "gather" and index == 0:  # the rows it gathers, at the width they are stored in
            stored = self.stored(comp, operand.name) or operand.arrays[0]
            return instr.arrays[0].elements * self.width(stored)
        if instr.opcode == "fusion":
            body = self.module.computations[instr.called("calls")]
            param = next((i for i in body.instrs if i.opcode == "parameter" and i.args.strip() == str(index)), None)
            sliced = self.sliced_read(body, body.users(), param.name) if param else None
            if sliced is not None:
                return sliced
        return self.read_size(comp, operand.name)

    def reinterprets(self, instr: Instr) -> bool:
        """Same data, other shape (or, on CPU, the compiler's own upcast)."""
        return instr.opcode in {"bitcast", "reshape"} or bool(self.f32_as and instr.opcode == "convert")

    def fusion_root(self, fusion: Instr) -> tuple[Computation, Instr]:
        """A fusion's computation and the root under any reinterpretations of it."""
        body = self.module.computations[fusion.called("calls")]
        root = body.root
        while self.reinterprets(root):
            root = body.by_name[root.operands[0]]
        return body, root

    def sliced_read(self, body: Computation, users: dict, name: str) -> float | None:
        """Inside a fusion: the bytes read of `name` when it is only sliced or updated in place (looking through
        reinterpretations, layout changes and, on CPU, upcasts); None when it is read whole."""
        total = 0.0
        for user in users.get(name, []):
            if user.opcode in SLICES and user.operands[0] == name:  # a slice that is only gathered from: the rows
                inner = self.sliced_read(body, users, user.name)
                total += self.size(user) if inner is None else min(inner, self.size(user))
            elif user.opcode == "gather" and user.operands[0] == name:
                total += self.size(user)
            elif user.opcode in IN_PLACE and user.operands[0] == name:
                continue
            elif self.reinterprets(user) or user.opcode in LAYOUT:  # the CPU compiler's upcasts and layout copies
                inner = self.sliced_read(body, users, user.name)
                if inner is None:
                    return None
                total += inner
            elif user.opcode == "fusion":  # a nested fusion (TPU) that may slice it in turn
                nested = self.module.computations[user.called("calls")]
                params = {int(i.args): i.name for i in nested.instrs if i.opcode == "parameter"}
                reads = [self.sliced_read(nested, nested.users(), params[k])
                         for k, operand in enumerate(user.operands) if operand == name and k in params]
                if not reads or None in reads:
                    return None
                total += sum(reads)
            else:
                return None
        return total if users.get(name) else None

    def in_place_operand(self, instr: Instr) -> int | None:
        """The operand a fusion updates in place (its root is a dynamic-update-slice or scatter of a parameter)."""
        if instr.opcode != "fusion":
            return None
        body, root = self.fusion_root(instr)
        if root.opcode not in IN_PLACE:
            return None
        target = body.by_name[self.source(body, root.operands[0])]
        return int(target.args) if target.opcode == "parameter" else None

    def written(self, comp: Computation, instr: Instr) -> float:
        """Bytes `instr` writes: an in-place update writes only the update."""
        root = instr
        if instr.opcode == "fusion":
            comp, root = self.fusion_root(instr)
        if root.opcode == "dynamic-update-slice":
            return self.size(comp.by_name[root.operands[1]])
        if root.opcode == "scatter":
            return self.size(comp.by_name[root.operands[-1]])
        if root.opcode == "copy-start":  # (destination, source, context): only the destination is written
            return self.array_bytes(root.arrays[0])
        if root.opcode.endswith("-start") or is_gemm(root):  # the results, not the operands or a gemm's workspace
            return sum(self.array_bytes(a) for a in results(comp, root))
        narrow = self.narrowed(instr) if instr.opcode == "fusion" and not instr.is_tuple else None
        if narrow is not None and self.width(narrow) < self.width(instr.arrays[0]):
            return instr.arrays[0].elements * self.width(narrow)
        return self.size(instr)

    def is_argument(self, comp: Computation, name: str) -> bool:
        """Value `name` looks into one of the step's arguments (weights, caches: through slices, gathers and
        upcasts), not into a value the step computed."""
        source = comp.by_name.get(self.buffer(comp, name))
        return source is not None and source.opcode in ("parameter", "get-tuple-element")

    def from_argument(self, comp: Computation, name: str, outers: tuple = ()) -> bool:
        """is_argument, followed out through the parameters of the fusions `outers` (pairs of computation and
        fusion entered so far) that `name` is inside."""
        source = comp.by_name.get(self.buffer(comp, name))
        if source is not None and source.opcode == "parameter" and outers:
            outer_comp, fusion = outers[-1]
            return self.from_argument(outer_comp, fusion.operands[int(source.args)], outers[:-1])
        return self.is_argument(comp, name)

    def instr_bytes(self, comp: Computation, instr: Instr) -> tuple[float, float, float]:
        """(bytes read, bytes written, of the reads those of the step's arguments)."""
        if instr.opcode in NO_TRAFFIC or self.is_view(instr):
            return 0.0, 0.0, 0.0
        reads = [self.operand_read(comp, instr, k) for k in range(len(instr.operands))]
        arguments = sum(r for r, op in zip(reads, instr.operands, strict=True) if r and self.is_argument(comp, op))
        return sum(reads), self.written(comp, instr), arguments

    def kernel_bytes(self, comp: Computation, kernel_of: dict[str, str]) -> dict[str, list[float]]:
        """(bytes read, written, of the reads the arguments') of each kernel, instructions mapped to the kernel they
        run in: each input from outside it read once (the part it slices), and only what is read outside it (or
        returned) written."""
        reads: dict[tuple[str, str], float] = {}
        for name, kernel in kernel_of.items():  # keyed by the buffer read: keys and values sliced from one cache
            instr = comp.by_name[name]
            for k, op in enumerate(instr.operands):
                if kernel_of.get(self.source(comp, op)) != kernel:
                    key = (kernel, self.buffer(comp, op))
                    reads[key] = max(reads.get(key, 0.0), self.operand_read(comp, instr, k))
        users = comp.users()

        def escapes(name: str, kernel: str) -> bool:  # read outside the kernel, looking through views
            for user in users.get(name, []):
                if user.is_root or (escapes(user.name, kernel) if self.is_view(user) and user.name not in kernel_of
                                    else kernel_of.get(user.name) != kernel):
                    return True
            return False

        out = defaultdict(lambda: [0.0, 0.0, 0.0])
        for (kernel, buffer), read in reads.items():
            out[kernel][0] += read
            if comp.by_name.get(buffer) is not None and comp.by_name[buffer].opcode in ("parameter",
                                                                                         "get-tuple-element"):
                out[kernel][2] += read
        for name, kernel in kernel_of.items():
            if comp.by_name[name].is_root or escapes(name, kernel):
                out[kernel][1] += self.written(comp, comp.by_name[name])
        return out

    def viewed(self, comp: Computation, instr: Instr) -> Instr | None:
        """The operand a view looks into: the first one, or a view fusion's largest (its data, not the indices of
        its slices)."""
        operands = [comp.by_name[o] for o in instr.operands if o in comp.by_name]
        if instr.opcode == "fusion" and operands:
            return max(operands, key=self.size)
        return operands[0] if operands else None

    def source(self, comp: Computation, name: str, stop=("parameter",)) -> str:
        """Follow views, and updates in place, back to the buffer they look into (no further than an instruction
        in `stop`): a kernel reading the cache just updated reads the cache."""
        instr = comp.by_name.get(name)
        while instr is not None and instr.operands and instr.opcode not in stop:
            if self.is_view(instr):
                instr = self.viewed(comp, instr)
            elif (k := self.in_place_operand(instr)) is not None or instr.opcode in IN_PLACE:
                instr = comp.by_name.get(instr.operands[k or 0])
            else:
                break
        return instr.name if instr is not None else name

    def buffer(self, comp: Computation, name: str) -> str:
        """The buffer a value looks into, stopping at a loop tuple's elements (one tuple holds many buffers)."""
        return self.source(comp, name, stop=("parameter", "get-tuple-element"))

