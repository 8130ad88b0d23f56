"""What one device does in a compiled step: FLOPs, HBM bytes, live memory and collectives, read from the HLO.

`Compiled.cost_analysis()` is not used for the totals, because (../shared/reference/xla-facts.md):
- a while loop's body (lax.scan over layers) is counted once: here every computation is weighted by its trip count;
- collectives carry no network bytes: here each one's wire bytes follow from its op, shape and replica groups;
- the CPU compiler upcasts bf16 to f32 (weights, activations, all-reduces): with `f32_as` set, f32 buffers are
  counted at the program's own width and pure conversions count as no traffic;
- slicing a loop's stacked weights or cache is materialised as a copy on CPU, where GPU and TPU compilers read the
  slice in place: slices are counted as views, read once by their consumer;
- a fusion that only changes layout (transposes a weight for the CPU's dot, say) is folded into its consumer,
  as GPU gemms and TPU layout assignment take either layout;
- the CPU compiler may re-lay a whole step argument (an fp8 KV cache) in its preferred layout on entry and copy
  it back on exit: a layout-only copy of an argument, or into the step's result, is not counted, as a compiler
  for the chip keeps the argument's own layout;
- the attention core (named scope models.transformer.ATTN_CORE) stands for a fused flash kernel: its scores stay
  on chip, so only its inputs and outputs count as HBM traffic and its intermediates take no memory.
"""

import math
import re
from collections import defaultdict
from dataclasses import dataclass

from tracer.fusion import Groups, kernels
from tracer.hlo import DTYPE_BITS, Array, Computation, Instr, Module, replica_groups, trip_count

COLLECTIVES = {"all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute"}
ELEMENTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "abs", "exponential", "log",
               "rsqrt", "sqrt", "tanh", "logistic", "power", "select", "compare",
               "exponential-minus-one", "log-plus-one", "sine", "cosine", "clamp"}
SLICES = {"slice", "dynamic-slice"}
VIEWS = {"bitcast", "reshape", "get-tuple-element", "tuple", "parameter", "constant"} | SLICES
NO_TRAFFIC = VIEWS | {"while", "call", "conditional", "after-all", "partition-id", "replica-id", "iota",
                      "all-reduce-done", "all-gather-done", "collective-permute-done", "async-done", "opt-barrier",
                      "copy-done"}  # an async copy moves its bytes at its start
LAYOUT = {"transpose", "copy"}  # layout changes inside a fusion: folded into the consumer by GPU/TPU compilers
IN_PLACE = {"dynamic-update-slice", "scatter"}  # operand 0 is updated where it lies
GEMM_CALL = re.compile(r"gemm|matmul", re.IGNORECASE)  # custom-call targets of library matmuls (__cublas$gemm)
WEIGHT_GATHER = "/expert_weights/"  # models.moe: a row's expert weights, gathered where a kernel reads them in place
FLOP_DTYPES = {"f8e4m3fn": "float8", "f8e5m2": "float8", "f8e4m3": "float8", "s8": "int8", "u8": "int8",
               "f4e2m1fn": "float4", "bf16": "bfloat16", "f16": "bfloat16", "f32": "float32"}


CORE = "attention core"  # the fused flash region: its FLOPs and the keys and values it reads
# Named scopes of the model code (models/) -> the part of the step they belong to, innermost first.
SCOPES = (("cache_update", "cache update"), ("router", "router"), ("expert_weights", "experts"),
          ("experts", "experts"), ("combine", "moe dispatch"), ("attn_core", CORE),
          ("attention", "attention"), ("moe", "moe dispatch"), ("mlp", "mlp"), ("lm_head", "lm head"))


def scope_of(op_name: str) -> str:
    """The part of the model an instruction comes from, by the named scopes in its op_name."""
    return SCOPES[_scope_rank(op_name)][1] if _scope_rank(op_name) < len(SCOPES) else "embedding, other"


def _scope_rank(op_name: str) -> int:
    """The position in SCOPES of the innermost named scope in `op_name` (len(SCOPES): none)."""
    path = "/" + op_name + "/"
    return next((k for k, (key, _) in enumerate(SCOPES) if f"/{key}/" in path), len(SCOPES))


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


def wire_bytes(op: str, n: int, operand_bytes: float, result_bytes: float) -> float:
    """Bytes each device sends for one collective over n devices (ring algorithms, scaling-book GPU chapter)."""
    if op == "all-reduce":
        return 2 * (n - 1) / n * operand_bytes  # reduce-scatter then all-gather
    if op == "all-gather":
        return (n - 1) / n * result_bytes
    if op in ("reduce-scatter", "all-to-all"):
        return (n - 1) / n * operand_bytes
    return operand_bytes  # collective-permute: the whole operand goes to one peer


@dataclass(frozen=True)
class ProgramCost:
    """Per device, per step."""

    flops: float
    flops_by_dtype: dict  # precision the work runs in (bfloat16, float8, int8, float32) -> FLOPs
    hbm_bytes: float
    peak_live_bytes: float  # buffers the step allocates (not its arguments), at their peak
    output_bytes: float  # results that are not donated arguments updated in place
    collectives: tuple[Collective, ...]
    notes: tuple[str, ...]
    by_scope: dict = None  # part of the model -> {"flops", "hbm_bytes"}: where the step's work comes from
    expert_weight_bytes: float = 0.0  # of hbm_bytes: the routed experts' weights read (step arguments read there)
    fused_hbm_bytes: float = 0.0  # the same step's bytes as serving engines' fused kernels move them (tracer.fusion)
    fused_by_scope: dict = None  # part of the model -> those bytes

    @property
    def comm_bytes(self) -> float:
        return sum(c.wire_bytes_per_device for c in self.collectives)


class _Reader:
    def __init__(self, module: Module, f32_as: str | None, fused_scope: str, vector_dtype: str,
                 on_chip: frozenset = frozenset()):
        self.module, self.f32_as, self.fused_scope = module, f32_as, fused_scope
        self.on_chip = on_chip  # memory spaces that are not device memory (TPU VMEM, SMEM): no HBM traffic
        self.flops: dict[str, float] = defaultdict(float)  # by the precision the work runs in
        self.vector_dtype = vector_dtype  # elementwise work runs in the program's own precision
        self.hbm_bytes = 0.0
        self.expert_weights = 0.0
        self.fused_bytes = 0.0  # as serving engines' fused kernels move them (tracer.fusion)
        self.fused_by_scope: dict[str, float] = defaultdict(float)
        self.collectives: dict[tuple, list] = defaultdict(lambda: [0, 0.0, 0.0])
        self.collective_scopes: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))
        self.by_scope: dict[str, dict] = defaultdict(lambda: {"flops": 0.0, "hbm_bytes": 0.0})
        self.users_of: dict[str, dict] = {}
        self.scopes: dict[tuple[str, str], str] = {}
        self.notes: set[str] = set()
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
            returned = instr.is_root or (readers and all(u.is_root for u in readers))
            if same and (source.opcode == "parameter" or returned):
                out.add(instr.name)
        return out

    # --- sizes in the program's own dtypes ---
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
        if instr.opcode == "gather" and WEIGHT_GATHER in instr.op_name + "/":
            return True
        if instr.opcode == "fusion":
            body = self.module.computations[instr.called("calls")]
            return all(self.is_view(i) or i.opcode in LAYOUT or self.index_math(i) for i in body.instrs)
        return instr.opcode == "transpose"

    @staticmethod
    def index_math(instr: Instr) -> bool:
        """Arithmetic on a few integers: the offsets of a slice (a device's share of a replicated weight)."""
        return all(a.dtype[0] in "sup" and a.elements <= 64 for a in instr.arrays) and bool(instr.arrays)

    def region(self, comp: Computation) -> set[str]:
        """Instructions of the fused scope, plus the ones the compiler stripped of metadata (CPU's rewritten dots)
        that feed it or are fed by it, directly or through views."""
        members = {i.name for i in comp.instrs if f"/{self.fused_scope}/" in i.op_name + "/" and not self.is_view(i)}
        if not members:
            return members
        users = comp.users()
        orphans = [i for i in comp.instrs if not i.op_name and not self.is_view(i) and i.opcode not in NO_TRAFFIC]
        grown = True
        while grown:  # neighbours through views, but not through a loop tuple (it would join unrelated work)
            grown = False
            for instr in orphans:
                if instr.name in members:
                    continue
                near = {self.buffer(comp, op) for op in instr.operands} | self.consumers(comp, users, instr.name)
                if near & members:
                    members.add(instr.name)
                    grown = True
        return members

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

    # --- FLOPs ---
    @staticmethod
    def is_gemm(instr: Instr) -> bool:
        """A library matmul's custom call (cuBLAS)."""
        return bool(GEMM_CALL.search(instr.attr("custom_call_target") or ""))

    def dot_dtype(self, comp: Computation, instr: Instr, outers: tuple) -> str:
        """The precision a matmul runs in: that of its wider operand, as stored (W8A8 runs in fp8 or int8; MXFP4
        weights times bf16 activations in bf16)."""
        names = []
        for operand in instr.operands[:2]:
            a = self.stored(comp, operand, outers) or comp.by_name[operand].arrays[0]
            names.append("bf16" if self.f32_as and a.dtype == "f32" else a.dtype)
        wide = max(names, key=lambda n: DTYPE_BITS.get(n, 32))
        return FLOP_DTYPES.get(wide, "float32")

    def instr_flops(self, comp: Computation, instr: Instr, outers: tuple = ()) -> dict[str, float]:
        """FLOPs by the precision they run in."""
        if instr.opcode == "dot":
            lhs = comp.by_name[instr.operands[0]].arrays[0]
            contracting = [int(d) for d in (instr.attr("lhs_contracting_dims") or "{}").strip("{}").split(",") if d]
            k = 1
            for d in contracting:
                k *= lhs.dims[d]
            return {self.dot_dtype(comp, instr, outers): 2.0 * instr.arrays[0].elements * k}
        if instr.opcode == "custom-call" and self.is_gemm(instr):
            # a library gemm (cuBLAS): its shapes give the FLOPs the compiler's cost model leaves at -1
            lhs = comp.by_name[instr.operands[0]].arrays[0]
            m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', instr.attrs)
            k = math.prod(lhs.dims[int(d)] for d in re.findall(r"\d+", m.group(1))) if m else lhs.dims[-1]
            return {self.dot_dtype(comp, instr, outers): 2.0 * instr.arrays[0].elements * k}
        if instr.opcode == "convolution":  # TPU matmuls: each output element contracts over rhs / output features
            rhs = comp.by_name[instr.operands[1]].arrays[0]
            labels = (instr.attr("dim_labels") or "_oi->").split("_")[1].split("->")[0]
            out_features = rhs.dims[labels.index("o")] if "o" in labels else 1
            lhs = comp.by_name[instr.operands[0]].arrays[0]
            return {self.dot_dtype(comp, instr, outers): 2.0 * instr.arrays[0].elements * rhs.elements / out_features
                    * _window_share(instr, lhs)}
        if instr.opcode in ELEMENTWISE:
            return {self.vector_dtype: float(instr.arrays[0].elements)}
        if instr.opcode == "reduce" and instr.operands[0] in comp.by_name:
            return {self.vector_dtype: float(comp.by_name[instr.operands[0]].arrays[0].elements)}
        if instr.opcode == "fusion":
            body = self.module.computations[instr.called("calls")]
            total: dict[str, float] = defaultdict(float)
            for i in body.instrs:
                for dtype, flops in self.instr_flops(body, i, (*outers, (comp, instr))).items():
                    total[dtype] += flops
            return total
        return {}

    # --- HBM bytes ---
    def operand_read(self, comp: Computation, instr: Instr, index: int) -> float:
        """Bytes `instr` reads of operand `index`: a fusion that only slices a parameter reads just the slices."""
        operand = comp.by_name.get(instr.operands[index])
        if operand is None:
            return 0.0
        if instr.opcode in IN_PLACE and index == 0:
            return 0.0
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
        reinterpretations and, on CPU, upcasts); None when it is read whole."""
        total = 0.0
        for user in users.get(name, []):
            if user.opcode in SLICES | {"gather"} and user.operands[0] == name:
                total += self.size(user)
            elif user.opcode in IN_PLACE and user.operands[0] == name:
                continue
            elif self.reinterprets(user):
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
        narrow = self.narrowed(instr) if instr.opcode == "fusion" and not instr.is_tuple else None
        if narrow is not None and self.width(narrow) < self.width(instr.arrays[0]):
            return instr.arrays[0].elements * self.width(narrow)
        return self.size(instr)

    def argument_reads(self, comp: Computation, instr: Instr) -> float:
        """Bytes `instr` reads of the step's arguments (weights, through slices, gathers and upcasts) rather than of
        values the step computed."""
        total = 0.0
        for k, op in enumerate(instr.operands):
            source = comp.by_name.get(self.buffer(comp, op))
            if source is not None and source.opcode in ("parameter", "get-tuple-element"):
                total += self.operand_read(comp, instr, k)
        return total

    def instr_bytes(self, comp: Computation, instr: Instr) -> float:
        if instr.opcode in NO_TRAFFIC or self.is_view(instr):
            return 0.0
        reads = sum(self.operand_read(comp, instr, k) for k in range(len(instr.operands)))
        return reads + self.written(comp, instr)

    def region_bytes(self, comp: Computation, region: list[Instr]) -> float:
        """Each fused kernel (a connected part of the region: one layer's attention core where layers are not a
        loop) reads each outside input once (the part it slices) and writes only what is used outside."""
        groups = Groups(i.name for i in region)
        for instr in region:
            for op in instr.operands:
                if (source := self.source(comp, op)) in groups.parent:
                    groups.join(instr.name, source)
        return sum(self.kernel_bytes(comp, groups.kernel_of()).values())

    def kernel_bytes(self, comp: Computation, kernel_of: dict[str, str]) -> dict[str, float]:
        """Bytes of each kernel (instructions mapped to the kernel they run in): each input from outside it read
        once (the part it slices), and only what is read outside it (or returned) written."""
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

        out = defaultdict(float)
        for (kernel, _), read in reads.items():
            out[kernel] += read
        for name, kernel in kernel_of.items():
            if comp.by_name[name].is_root or escapes(name, kernel):
                out[kernel] += self.written(comp, comp.by_name[name])
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

    # --- collectives ---
    def record_collective(self, comp: Computation, instr: Instr, times: int):
        op = instr.opcode.removesuffix("-start")
        groups = replica_groups(instr, self.module.num_partitions)
        n = max(len(g) for g in groups)
        if n == 1:
            return  # a group of one moves nothing
        def wire(arrays):  # what crosses the links, wherever the buffers live (TPU collectives may use VMEM)
            return sum(self.array_bytes(Array(a.dtype, a.dims)) for a in arrays)

        operand = sum(wire(comp.by_name[o].arrays) for o in instr.operands if o in comp.by_name)
        # an async -start returns (operand, result, ...): its last array is the result
        result = wire(instr.arrays[-1:] if instr.opcode.endswith("-start") else instr.arrays)
        moved = result if op == "all-gather" else operand
        arrays = [a for o in instr.operands if o in comp.by_name for a in comp.by_name[o].arrays]
        dtype = arrays[0].dtype if arrays else "?"  # as compiled (the CPU compiler's f32 counts at bf16 width)
        key = (op, n, tuple(tuple(g) for g in groups), moved, dtype)
        entry = self.collectives[key]
        entry[0] += times
        entry[1] += times * wire_bytes(op, n, operand, result)
        self.collective_scopes[key][
            self.scope(comp, instr)] += times * wire_bytes(op, n, operand, result)

    def scope(self, comp: Computation, instr: Instr) -> str:
        """The part of the model `instr` belongs to (found once: the byte and FLOP walks both ask)."""
        key = (comp.name, instr.name)
        if key not in self.scopes:
            self.scopes[key] = self._find_scope(comp, instr)
        return self.scopes[key]

    def _find_scope(self, comp: Computation, instr: Instr) -> str:
        """The part of the model `instr` belongs to; an instruction the compiler left without metadata (CPU's
        rewritten dots) takes that of its nearest operands, then users, that lie in a named part (the slice of a
        stacked weight, outside every part, does not decide)."""
        if comp.name not in self.users_of:
            self.users_of[comp.name] = comp.users()
        users, seen, ring = self.users_of[comp.name], {instr.name}, [instr]
        if name := self.op_name(instr):
            return scope_of(name)
        for _ in range(6):  # nearest neighbours with metadata, through views and converts: the innermost part
            rank = min((_scope_rank(self.op_name(i)) for i in ring), default=len(SCOPES))
            if rank < len(SCOPES):
                return SCOPES[rank][1]
            ring = [n for i in ring for n in [*(comp.by_name[o] for o in i.operands if o in comp.by_name),
                                               *users.get(i.name, [])] if n.name not in seen]
            seen.update(n.name for n in ring)
        return scope_of("")

    def op_name(self, instr: Instr) -> str:
        """An instruction's op_name, or for a fusion without one, that of the first fused instruction with one."""
        if instr.op_name or instr.opcode != "fusion":
            return instr.op_name
        body = self.module.computations[instr.called("calls")]
        return next((i.op_name for i in reversed(body.instrs) if i.op_name), "")

    # --- walking the program ---
    def serving_kernels(self, comp: Computation, members: set[str], times: int):
        """The step's bytes as serving engines' fused kernels move them (tracer.fusion), by part of the model."""
        nodes = [i for i in comp.instrs if i.name not in members and i.opcode not in NO_TRAFFIC
                 and not self.is_view(i)]  # collectives too: kernels of their own, moving their buffers
        kernel_of, kinds = kernels(self, comp, nodes)
        sizes = defaultdict(int)
        for kernel in kernel_of.values():
            sizes[kernel] += 1
        fused = {name: kernel for name, kernel in kernel_of.items() if sizes[kernel] > 1}
        labels = {}
        for instr in nodes:  # a kernel's part: that of its first matmul, else of its first instruction
            kernel = kernel_of[instr.name]
            if kernel not in labels or (kinds[instr.name] == "matmul" and labels[kernel][1] != "matmul"):
                labels[kernel] = (self.scope(comp, instr), kinds[instr.name])
        moved = dict(self.kernel_bytes(comp, fused))
        moved.update({i.name: self.instr_bytes(comp, i) for i in nodes if i.name not in fused})
        for kernel, bytes_ in moved.items():
            self.fused_bytes += times * bytes_
            self.fused_by_scope[labels[kernel][0]] += times * bytes_

    def walk(self, comp: Computation, times: int):
        members = self.region(comp)
        region = [i for i in comp.instrs if i.name in members]
        if region:  # the attention core's fused kernel
            fused = times * self.region_bytes(comp, region)
            self.hbm_bytes += fused
            self.by_scope[CORE]["hbm_bytes"] += fused
            self.fused_bytes += fused
            self.fused_by_scope[CORE] += fused
        self.serving_kernels(comp, members, times)
        for instr in comp.instrs:
            label = CORE if instr.name in members else self.scope(comp, instr)
            scope = self.by_scope[label]
            for dtype, flops in self.instr_flops(comp, instr).items():
                self.flops[dtype] += times * flops
                scope["flops"] += times * flops
            if instr.name not in members:
                moved = times * self.instr_bytes(comp, instr)
                self.hbm_bytes += moved
                scope["hbm_bytes"] += moved
                if label == "experts" and moved:
                    self.expert_weights += times * self.argument_reads(comp, instr)
            if instr.opcode.removesuffix("-start") in COLLECTIVES:
                self.record_collective(comp, instr, times)
            if instr.opcode == "while":
                trips = trip_count(self.module, instr)
                if trips is None:
                    self.notes.add(f"a loop ({instr.name}) has no readable trip count: counted once")
                self.walk(self.module.computations[instr.called("body")], times * (trips or 1))
            elif instr.opcode in ("call", "async-start"):
                self.walk(self.module.computations[instr.called("to_apply") or instr.called("calls")], times)

    # --- memory: a liveness walk over the scheduled program, in the program's own dtypes ---
    def peak_live(self, comp: Computation, is_entry: bool) -> tuple[float, float]:
        """(peak bytes of buffers allocated by `comp`, bytes of its results that it allocated)."""
        region = self.region(comp)
        owners: dict[str, list[set[str]]] = {}  # per result element: the buffers it lives in

        def flat(name: str) -> set[str]:
            return set().union(*owners.get(name, [set()]))

        for instr in comp.instrs:
            op, args = instr.opcode, instr.operands
            if op in ("parameter", "constant") or (self.is_view(instr) and not args):
                owners[instr.name] = [set() for _ in instr.arrays]  # arguments are not allocated by the step
            elif op == "tuple":
                owners[instr.name] = [flat(a) for a in args]
            elif op == "get-tuple-element":
                elements, index = owners.get(args[0], [set()]), int(instr.attr("index") or 0)
                owners[instr.name] = [elements[index] if index < len(elements) else flat(args[0])]
            elif op == "while":
                owners[instr.name] = owners.get(args[0], [set()])
            elif self.is_view(instr) or op in IN_PLACE:
                owners[instr.name] = [flat(args[0])]
            elif (k := self.in_place_operand(instr)) is not None:
                owners[instr.name] = [flat(args[k])]
            else:
                owners[instr.name] = [{instr.name}]
        users = comp.users()
        last_use = {i.name: idx for idx, i in enumerate(comp.instrs) if owners[i.name] == [{i.name}]}  # unused: die
        for idx, instr in enumerate(comp.instrs):
            for op in instr.operands:
                for buf in flat(op):
                    last_use[buf] = idx
        results = flat(comp.root.name)
        live = peak = 0.0
        frees = defaultdict(list)
        for buf, idx in last_use.items():
            if buf not in results:
                frees[idx].append(buf)
        for idx, instr in enumerate(comp.instrs):
            inner = 0.0
            if instr.opcode == "while":
                inner = self.peak_live(self.module.computations[instr.called("body")], False)[0]
            internal = instr.name in region and all(u.name in region for u in users.get(instr.name, []))
            if owners[instr.name] == [{instr.name}] and not internal:
                live += self.size(instr)
            peak = max(peak, live + inner)
            for buf in frees.get(idx, []):
                live -= self.size(comp.by_name[buf])
        allocated_results = sum(self.size(comp.by_name[b]) for b in results)
        return peak, allocated_results if is_entry else 0.0


def _window_share(instr: Instr, lhs: Array) -> float:
    """The average share of a convolution's window that lands on input values rather than padding or dilation
    holes: TPU programs write batched matmuls as convolutions over a padded or dilated batch axis whose windows
    meet one input value each."""
    window = (instr.attr("window") or "").strip("{}")
    if "size=" not in window:
        return 1.0
    labels = instr.attr("dim_labels") or ""
    lhs_labels, out_labels = labels.split("_")[0], labels.split("->")[-1]

    def field(key: str) -> list[str] | None:
        m = re.search(rf"(?:^|\s){key}=(\S+)", window)
        return m.group(1).split("x") if m else None

    sizes = [int(x) for x in field("size")]
    n_dims = len(sizes)
    strides = [int(x) for x in field("stride") or [1] * n_dims]
    pads = [tuple(int(v) for v in p.split("_")) for p in field("pad") or ["0_0"] * n_dims]
    lhs_dilate = [int(x) for x in field("lhs_dilate") or [1] * n_dims]
    rhs_dilate = [int(x) for x in field("rhs_dilate") or [1] * n_dims]
    share = 1.0
    for k in range(n_dims):
        if str(k) not in lhs_labels or str(k) not in out_labels:
            continue
        n, w, d = lhs.dims[lhs_labels.index(str(k))], sizes[k], lhs_dilate[k]
        outputs = instr.arrays[0].dims[out_labels.index(str(k))]
        step = max(1, outputs // 4096)  # average over (at most ~4096 sampled) output positions
        hits = sum(1 for o in range(0, outputs, step) for j in range(w)
                   if 0 <= (pos := o * strides[k] + j * rhs_dilate[k] - pads[k][0]) <= (n - 1) * d and pos % d == 0)
        share *= hits / len(range(0, outputs, step)) / w
    return share


def read_program(hlo_text_module: Module, f32_as: str | None, fused_scope: str,
                 vector_dtype: str = "bfloat16", on_chip: frozenset = frozenset()) -> ProgramCost:
    """vector_dtype: the model's activation dtype, the precision of its elementwise work. on_chip: memory spaces
    whose buffers are not device memory (TPU: {1, 2})."""
    reader = _Reader(hlo_text_module, f32_as, fused_scope, vector_dtype, on_chip)
    entry = hlo_text_module.computations[hlo_text_module.entry]
    reader.walk(entry, 1)
    peak, outputs = reader.peak_live(entry, True)
    collectives = tuple(
        Collective(op, n, groups, count, moved, wire, tuple(sorted(reader.collective_scopes[key].items())), dtype)
        for key, (count, wire, _) in sorted(reader.collectives.items(), key=lambda kv: kv[0][:2])
        for op, n, groups, moved, dtype in [key])
    flops = {k: v for k, v in sorted(reader.flops.items()) if v}
    by_scope = {k: dict(v) for k, v in sorted(reader.by_scope.items()) if v["flops"] or v["hbm_bytes"]}
    return ProgramCost(sum(flops.values()), flops, reader.hbm_bytes, peak, outputs, collectives,
                       tuple(sorted(reader.notes)), by_scope, reader.expert_weights, reader.fused_bytes,
                       {k: v for k, v in sorted(reader.fused_by_scope.items()) if v})
