"""The fusion model: which of a compiled program's kernels a serving engine runs as one, so that the values passed
between them never reach HBM.

A compiler for the CPU (and, less so, XLA's GPU compiler) leaves a step's elementwise work as many small kernels,
each reading and writing whole activations; serving engines run hand-fused kernels instead. The rules, each with the
engines' kernels it stands for:

1. Projections that read the same activation run as one matmul, reading it once: merged QKV and gate/up weights
   (vLLM QKVParallelLinear and MergedColumnParallelLinear; MLA's fused q_a/kv_a projection).
2. Pointwise work on a matmul's outputs alone (with small side inputs: a bias, rope's sin and cos, a scale, the
   router weights of each slot) runs in its epilogue: rope on q and k, SiLU(gate) x up, dequantization, the
   router-weighted scale of an expert's output (CUTLASS/TensorRT-LLM gated-activation epilogues; vLLM's fused MoE
   multiplies by the routing weight in its epilogue).
3. A gather that feeds only matmuls runs in their prologue: a fused MoE kernel reads each token's row by its sorted
   index instead of materialising the dispatch buffer (vLLM fused_moe's sorted_token_ids; TensorRT-LLM's permute).
4. A scatter-add of a matmul's (weighted) outputs runs in its epilogue: the MoE finalize that adds each slot's
   output into its token (TensorRT-LLM's finalize fusion).
5. Chains of pointwise and row-reduction work that no matmul absorbed run as one kernel: the residual add with the
   RMSNorm after it (vLLM fused_add_rms_norm), softmax and top-k prologues, quantization of activations.
The attention core is a flash kernel already (tracer.read.attention). Collectives, sorts, cache writes and anything
else stay kernels of their own. A kernel reads each outside input once and writes only what is read outside it.
"""

from tracer.read.hlo import Computation, Instr
from tracer.read.rules import is_gemm

POINTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "abs", "exponential", "log",
             "rsqrt", "sqrt", "tanh", "logistic", "power", "select", "compare", "exponential-minus-one",
             "log-plus-one", "sine", "cosine", "clamp", "convert", "broadcast", "reshape", "bitcast", "transpose",
             "copy", "slice", "concatenate", "iota", "constant", "parameter", "and", "or", "not", "floor", "ceil",
             "sign", "round-nearest-even", "round-nearest-afz", "is-finite", "pad", "dynamic-slice"}
MATMULS = {"dot", "convolution"}
SIDE_INPUT = 8  # an operand with at most 1/8 of a kernel output's elements is a side input (bias, sin/cos, scales)


def kind(buffers, instr: Instr) -> str:
    """matmul, pointwise, reduce (pointwise with row reductions), gather, scatter, or other."""
    ops = {instr.opcode}
    if instr.opcode == "fusion":
        ops = {i.opcode for i in buffers.module.computations[instr.called("calls")].instrs}
    if ops & MATMULS or is_gemm(instr):
        return "matmul"
    if ops <= POINTWISE:
        return "pointwise"
    if ops <= POINTWISE | {"reduce"}:
        return "reduce"
    if "scatter" in ops and ops <= POINTWISE | {"scatter"}:
        return "scatter"
    if "gather" in ops and ops <= POINTWISE | {"gather"}:
        return "gather"
    return "other"


class Groups:
    """Which kernel each instruction runs in, as kernels are joined (union-find over instruction names)."""

    def __init__(self, names):
        self.parent = {name: name for name in names}

    def find(self, name: str) -> str:
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def join(self, a: str, b: str):
        self.parent[self.find(a)] = self.find(b)

    def kernel_of(self) -> dict[str, str]:
        return {name: self.find(name) for name in self.parent}


def kernels(buffers, comp: Computation, nodes: list[Instr]) -> tuple[dict[str, str], dict[str, str]]:
    """(each of `nodes` (the computation's kernels that move data, in program order) -> the serving kernel it runs in
    (a representative member's name), each -> its kind)."""
    fuser = Fuser(buffers, comp, nodes)
    fuser.merge_projections()
    for instr in nodes:
        fuser.absorb(instr)
    return fuser.groups.kernel_of(), fuser.kinds


class Fuser:
    """The rules applied to one computation's kernels, joined as union-find groups."""

    def __init__(self, buffers, comp: Computation, nodes: list[Instr]):
        self.buffers, self.comp, self.nodes = buffers, comp, nodes
        self.kinds = {i.name: kind(buffers, i) for i in nodes}
        self.groups = Groups(self.kinds)
        self.users = comp.users()
        self.matmuls = [i.name for i in nodes if self.kinds[i.name] == "matmul"]
        self.ancestors: dict[str, set[str]] = {}
        for instr in nodes:  # program order: producers come first
            self.ancestors[instr.name] = set()
            for p in self.operands(instr, side=True):
                if p is not None:
                    self.ancestors[instr.name] |= {p} | self.ancestors.get(p, set())

    def producer(self, name: str) -> str | None:
        """The node behind an operand, through views."""
        instr = self.comp.by_name.get(name)
        while instr is not None and instr.name not in self.kinds and self.buffers.is_view(instr) and instr.operands:
            instr = self.buffers.viewed(self.comp, instr)
        return instr.name if instr is not None and instr.name in self.kinds else None

    def consumers(self, name: str) -> list[str]:
        """The nodes reading a value, through views."""
        found = []
        for user in self.users.get(name, []):
            if user.name in self.kinds:
                found.append(user.name)
            elif self.buffers.is_view(user):
                found += self.consumers(user.name)
        return found

    def operands(self, instr: Instr, side: bool) -> list[str | None]:
        """Producers of the operands (None: a step argument or loop value); without `side`, only of those that are
        not side inputs."""
        out = max((a.elements for a in instr.arrays), default=0)
        found = []
        for op in instr.operands:
            arrays = self.comp.by_name[op].arrays if op in self.comp.by_name else []
            if side or sum(a.elements for a in arrays) * SIDE_INPUT > out:
                found.append(self.producer(op))
        return found

    def join_acyclic(self, a: str, b: str):
        """Join two kernels unless something outside both reads one and feeds the other (no kernel can wait for
        its own output)."""
        find = self.groups.find
        merged = {n for n in self.kinds if find(n) in (find(a), find(b))}
        upstream = set().union(*(self.ancestors[n] for n in merged)) - merged
        if not any(self.ancestors[x] & merged for x in upstream):
            self.groups.join(a, b)

    def in_matmul(self, name: str | None) -> bool:
        return name is not None and self.groups.find(name) in {self.groups.find(m) for m in self.matmuls}

    def merge_projections(self):
        """Rule 1: matmuls reading one activation."""
        for name in self.matmuls:
            for p in self.operands(self.comp.by_name[name], side=False):
                if p is not None and self.kinds[p] != "matmul":
                    for other in self.consumers(p):
                        if self.kinds[other] == "matmul":
                            self.join_acyclic(other, name)

    def absorb(self, instr: Instr):
        """Rules 2 to 5 for one kernel."""
        kinds, join, name = self.kinds, self.groups.join, instr.name
        k, sources = kinds[name], self.operands(instr, side=False)
        if k == "gather" and (readers := self.consumers(name)) and all(kinds[r] == "matmul" for r in readers):
            for r in readers:  # rule 3
                join(name, r)
        elif k == "scatter" and (fill := self.producer(instr.operands[0])) and self.in_matmul(
                updates := self.producer(instr.operands[-1])):
            join(name, updates)  # rule 4: the updates come from a matmul's kernel...
            if kinds[fill] == "pointwise" and not self.operands(self.comp.by_name[fill], side=False) and \
                    self.consumers(fill) == [name]:
                join(fill, name)  # ...and the zeros it adds into are the kernel's own output, not a memset
        elif k == "pointwise" and sources and all(map(self.in_matmul, sources)) and len(
                {self.groups.find(s) for s in sources}) == 1:
            join(name, sources[0])  # rule 2
        elif k in ("pointwise", "reduce"):
            for s in self.operands(instr, side=True):  # rule 5
                if s is not None and kinds[s] in ("pointwise", "reduce") and not self.in_matmul(s):
                    self.join_acyclic(name, s)
