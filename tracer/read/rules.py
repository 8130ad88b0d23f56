"""The per-opcode rules: what kind of kernel an instruction is, its FLOPs by the precision they run in, and a
matmul's shape. Bytes are the same for every opcode (tracer.read.buffers); what differs is here, one rule per
opcode. An opcode with no rule is charged its reads and writes and named in the notes (Counter.unruled).

FLOPs: a matmul 2 M N K; elementwise work one per output element; a reduction one per input element; data
movement, integer and bit work (index arithmetic), comparisons in sorts and collectives none.
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from tracer.read.hlo import DTYPE_BITS, Array, Computation, Instr
from tracer.read.values import Cost

ELEMENTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "abs", "exponential", "log",
               "rsqrt", "sqrt", "tanh", "logistic", "power", "select", "compare",
               "exponential-minus-one", "log-plus-one", "sine", "cosine", "clamp", "floor", "ceil", "sign",
               "round-nearest-even", "round-nearest-afz", "remainder", "atan2", "erf", "cbrt", "tan", "is-finite"}
INTEGER = {"and", "or", "xor", "not", "shift-left", "shift-right-logical", "shift-right-arithmetic", "popcnt",
           "count-leading-zeros"}  # index arithmetic: no FLOPs
COPIES = {"copy", "transpose", "copy-start", "broadcast", "concatenate", "pad", "slice", "dynamic-slice",
          "dynamic-update-slice", "reverse", "convert", "bitcast-convert", "iota", "reshape", "bitcast"}
STRUCTURE = {"parameter", "constant", "get-tuple-element", "tuple", "while", "call", "conditional", "after-all",
             "partition-id", "replica-id", "opt-barrier", "copy-done", "async-start", "async-update", "async-done",
             "add-dependency", "domain", "get-dimension-size"}  # no kernel of their own
COLLECTIVES = {"all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute"}
STARTED = {f"{op}-{end}" for op in ("all-reduce", "all-gather", "collective-permute") for end in ("start", "done")}
GEMM_CALL = re.compile(r"gemm|matmul", re.IGNORECASE)  # custom-call targets of library matmuls (__cublas$gemm)
TRSM_CALL = re.compile(r"trsm|triangularsolve", re.IGNORECASE)  # triangular solves: LAPACK's on CPU, cuBLAS's on GPU
MARKER_CALLS = re.compile(r"AssumeGatherIndicesInBound|Sharding|SPMDFullToShardShape|SPMDShardToFullShape")  # return
# their operand as it is (the compiler's annotations): views
NO_WORK_CALLS = re.compile(MARKER_CALLS.pattern + r"|GatherScatterIndicesBitpacked|AllocateBuffer|MoveTo(Host|Device)")
# custom calls that compute nothing (those that are not markers still move their bytes)
FLOP_DTYPES = {"f8e4m3fn": "float8", "f8e5m2": "float8", "f8e4m3": "float8", "s8": "int8", "u8": "int8",
               "f4e2m1fn": "float4", "bf16": "bfloat16", "f16": "bfloat16", "f32": "float32"}


@dataclass(frozen=True)
class Work:
    kind: str  # tracer.read.values.KINDS
    cost: Cost = Cost()  # FLOPs only: bytes are the buffers' rules
    shape: tuple[int, int, int] | None = None  # a matmul's (M, N, K)
    dtypes: tuple[str, ...] = ()  # a matmul's operands as stored
    gemms: int = 1  # a matmul's batch: the GEMMs of its batch dims (an expert each, for grouped experts)


RULES: dict[str, Callable] = {}


def rule(*opcodes: str):
    """Register the rule for `opcodes`: (counter, computation, instruction, enclosing fusions) -> Work."""
    def register(fn):
        for op in opcodes:
            assert op not in RULES, f"two rules for {op}"
            RULES[op] = fn
        return fn
    return register


def is_marker(instr: Instr) -> bool:
    """A custom call that only annotates its operand (buffers.Buffers.is_view)."""
    return instr.opcode == "custom-call" and bool(MARKER_CALLS.search(instr.attr("custom_call_target") or ""))


def floating(arrays) -> bool:
    """Values of a floating-point type: elementwise and reduction work on them is FLOPs, on integers index math."""
    return any(a.dtype.startswith(("f", "bf")) for a in arrays)


def is_gemm(instr: Instr) -> bool:
    """A library matmul's custom call (cuBLAS)."""
    return instr.opcode == "custom-call" and bool(GEMM_CALL.search(instr.attr("custom_call_target") or ""))


class Counter:
    """The rules applied to one program: `buffers` knows the width each value is stored at; `vector_dtype` is the
    precision elementwise work runs in (the model's activations)."""

    def __init__(self, buffers, vector_dtype: str):
        self.buffers, self.module, self.vector_dtype = buffers, buffers.module, vector_dtype
        self.unruled: set[str] = set()  # opcodes met with no rule, and custom calls of unknown targets

    def work(self, comp: Computation, instr: Instr, outers: tuple = ()) -> Work:
        fn = RULES.get(instr.opcode)
        if fn is None:
            self.unruled.add(instr.opcode)
            return Work("other")
        return fn(self, comp, instr, outers)

    def vector(self, elements: int) -> Cost:
        return Cost.of({self.vector_dtype: float(elements)})

    def matmul(self, comp: Computation, instr: Instr, outers: tuple, k: float, share: float = 1.0,
               n: int | None = None, gemms: int = 1) -> Work:
        """2 M N K, in the precision of the wider operand as stored (W8A8 runs in fp8 or int8; MXFP4 weights times
        bf16 activations in bf16). M: the lhs's elements over K, or (given N) the output's over N; `gemms` (the
        batch dims) folded into M. When the lhs alone is a step argument (the CPU compiler puts an expert's weights
        first), the sides swap, so that M is the tokens' side and N the weights'."""
        names = []
        for operand in instr.operands[:2]:
            a = self.buffers.stored(comp, operand, outers) or comp.by_name[operand].arrays[0]
            names.append("bf16" if self.buffers.f32_as and a.dtype == "f32" else a.dtype)
        wide = max(names, key=lambda n: DTYPE_BITS.get(n, 32))
        out = instr.arrays[0].elements
        m = (out / n if n else comp.by_name[instr.operands[0]].arrays[0].elements / k) if k else 0
        shape = (round(m), round(out / m) if m else 0, round(k))
        gemms = max(gemms, 1)
        if (m and n is None and len(instr.operands) > 1 and self.buffers.from_argument(comp, instr.operands[0], outers)
                and not self.buffers.from_argument(comp, instr.operands[1], outers)):
            shape = (round(out / m * gemms), round(m / gemms), round(k))
        return Work("matmul", Cost.of({FLOP_DTYPES.get(wide, "float32"): 2.0 * out * k * share}), shape, tuple(names),
                    gemms)


def _dims(text: str | None) -> list[int]:
    return [int(d) for d in re.findall(r"\d+", text or "")]


@rule("dot")
def _dot(counter: Counter, comp: Computation, instr: Instr, outers: tuple) -> Work:
    lhs = comp.by_name[instr.operands[0]].arrays[0]
    contracting = _dims(instr.attr("lhs_contracting_dims"))
    gemms = math.prod(lhs.dims[d] for d in _dims(instr.attr("lhs_batch_dims")))
    return counter.matmul(comp, instr, outers, math.prod(lhs.dims[d] for d in contracting), gemms=gemms)


@rule("custom-call")
def _custom_call(counter: Counter, comp: Computation, instr: Instr, outers: tuple) -> Work:
    """A library gemm (cuBLAS): its shapes give the FLOPs the compiler's cost model leaves at -1."""
    target = (instr.attr("custom_call_target") or "").strip('"')
    if TRSM_CALL.search(target):
        return _triangular_solve(counter, comp, instr, outers)
    if not is_gemm(instr):
        if not NO_WORK_CALLS.search(target):
            counter.unruled.add(f"custom-call {target}")
        return Work("other")
    lhs = comp.by_name[instr.operands[0]].arrays[0]
    m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', instr.attrs)
    k = math.prod(lhs.dims[d] for d in _dims(m.group(1))) if m else lhs.dims[-1]
    b = re.search(r'"lhs_batch_dimensions":\[([^\]]*)\]', instr.attrs)
    return counter.matmul(comp, instr, outers, k, gemms=math.prod(lhs.dims[d] for d in _dims(b and b.group(1))))


@rule("triangular-solve")
def _triangular_solve(counter: Counter, comp: Computation, instr: Instr, outers: tuple) -> Work:
    """A [..., n, n] triangular system solved for [..., n, r] right-hand sides (forward substitution): n^2 r FLOPs a
    batch element (n (n - 1) / 2 multiply-adds a column, and r divisions by the diagonal, taken as n^2 r), in the
    output's precision (linear attention's chunked delta rule)."""
    a = comp.by_name[instr.operands[0]].arrays[0]
    n = a.dims[-1]
    return Work("other", counter.vector(instr.arrays[0].elements * n))


@rule("convolution")
def _convolution(counter: Counter, comp: Computation, instr: Instr, outers: tuple) -> Work:
    """TPU matmuls: each output element contracts over rhs / output features (times the share of the window that
    meets input values)."""
    rhs = comp.by_name[instr.operands[1]].arrays[0]
    labels = (instr.attr("dim_labels") or "_oi->").split("_")[1].split("->")[0]
    out_features = rhs.dims[labels.index("o")] if "o" in labels else 1
    lhs = comp.by_name[instr.operands[0]].arrays[0]
    return counter.matmul(comp, instr, outers, rhs.elements / out_features, window_share(instr, lhs), out_features)


@rule(*ELEMENTWISE)
def _elementwise(counter: Counter, comp: Computation, instr: Instr, outers: tuple) -> Work:
    """One FLOP an output element, on floating-point values (a compare of floats too; an s32 add is index math)."""
    values = [*instr.arrays, *(a for op in instr.operands if op in comp.by_name for a in comp.by_name[op].arrays)]
    return Work("elementwise", counter.vector(instr.arrays[0].elements) if floating(values) else Cost())


@rule("reduce")
def _reduce(counter: Counter, comp: Computation, instr: Instr, outers: tuple) -> Work:
    """One FLOP an input element, on floating-point values."""
    operand = comp.by_name.get(instr.operands[0])
    if operand is None or not floating(operand.arrays):
        return Work("reduce")
    return Work("reduce", counter.vector(operand.arrays[0].elements))


@rule("reduce-window")
def _reduce_window(counter: Counter, comp: Computation, instr: Instr, outers: tuple) -> Work:
    """One FLOP for each input value each window takes in: outputs x window size (a cumulative or pooled sum)."""
    m = re.search(r"size=([\dx]+)", instr.attr("window") or "")
    window = math.prod(int(x) for x in m.group(1).split("x")) if m else 1
    if not floating(instr.arrays):
        return Work("reduce")
    return Work("reduce", counter.vector(instr.arrays[0].elements * window))


@rule("fusion")
def _fusion(counter: Counter, comp: Computation, instr: Instr, outers: tuple) -> Work:
    """The sum of its body's work; a matmul's kind and shape if it holds one, else the busiest kind in it."""
    body = counter.module.computations[instr.called("calls")]
    works = [counter.work(body, i, (*outers, (comp, instr))) for i in body.instrs]
    cost = sum((w.cost for w in works), Cost())
    matmul = joined(works)
    if matmul is not None:
        return Work("matmul", cost, matmul.shape, matmul.dtypes, matmul.gemms)
    kinds = {w.kind for w in works}
    kind = next((k for k in ("scatter", "gather", "reduce", "elementwise", "copy") if k in kinds), "other")
    return Work(kind, cost)


def joined(works: list[Work]) -> Work | None:
    """The matmuls among `works` as one (a fused gate and up projection, merged QKV): the first one's M and K, and
    the N that makes 2 M N K their FLOPs together. None when there is none."""
    matmuls = [w for w in works if w.kind == "matmul"]
    if not matmuls:
        return None
    first = matmuls[0]
    m, n, k = first.shape
    flops = sum(w.cost.flops for w in matmuls)
    if len(matmuls) > 1 and m and k:
        n = round(flops / (2 * m * k))
    return Work("matmul", Cost(), (m, n, k), first.dtypes, first.gemms)


def _no_flops(kind: str):
    def fn(counter, comp, instr, outers) -> Work:
        return Work(kind)
    return fn


rule(*INTEGER)(_no_flops("elementwise"))
rule(*COPIES)(_no_flops("copy"))
rule("gather")(_no_flops("gather"))
rule("scatter")(_no_flops("scatter"))
rule("sort", "rng", "rng-bit-generator")(_no_flops("other"))
rule(*COLLECTIVES, *STARTED)(_no_flops("collective"))
rule(*STRUCTURE)(_no_flops("other"))


def window_share(instr: Instr, lhs: Array) -> float:
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
