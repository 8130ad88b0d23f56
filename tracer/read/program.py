"""Walk a compiled program: every computation weighted by its trip count, each instruction priced by its rule
(tracer.read.rules) and its buffers (tracer.read.buffers), into kernel records twice over: as the program's own
kernels run, and as serving engines' fused kernels run them (tracer.read.fusion).

`Compiled.cost_analysis()` is not used, because (../shared/reference/xla-facts.md) a while loop's body (lax.scan
over layers) is counted once there, and collectives carry no network bytes.
"""

from collections import defaultdict

from tracer.read import attention, fusion, liveness
from tracer.read.buffers import NO_TRAFFIC, Buffers
from tracer.read.collectives import Collectives
from tracer.read.hlo import Computation, Instr, Module, trip_count
from tracer.read.rules import COLLECTIVES, Counter, Work, joined
from tracer.read.scopes import Scoper
from tracer.read.values import Cost, Kernel, ProgramCost


class Reader:
    def __init__(self, module: Module, f32_as: str | None, on_chip: frozenset, vector_dtype: str, scopes):
        self.module, self.scopes = module, scopes
        self.buffers = Buffers(module, f32_as, on_chip, scopes.read_in_place)
        self.counter = Counter(self.buffers, vector_dtype)
        self.scoper = Scoper(module, scopes)
        self.collectives = Collectives(self.buffers)
        self.core = scopes.part(scopes.fused)
        self.kernels: list[Kernel] = []  # as compiled
        self.fused: list[Kernel] = []  # as serving engines run them
        self.notes: set[str] = set()
        self.regions: dict[str, set[str]] = {}

    def region(self, comp: Computation) -> set[str]:
        """The computation's fused attention region, found once (the walk and the liveness walk both ask)."""
        if comp.name not in self.regions:
            self.regions[comp.name] = attention.region(self.buffers, comp, self.scopes.fused)
        return self.regions[comp.name]

    def walk(self, comp: Computation, times: int):
        members = self.region(comp)
        works = {i.name: self.counter.work(comp, i) for i in comp.instrs}
        core = self.grouped(comp, attention.kernels(self.buffers, comp, members), works, times,
                            scope=lambda instr: self.core, kind="attention")
        self.kernels += core
        self.fused += core
        moved = {i.name: self.buffers.instr_bytes(comp, i) for i in comp.instrs if i.name not in members}
        self.fused += self.serving_kernels(comp, members, works, moved, times)
        for instr in comp.instrs:
            if instr.name not in members:
                self.kernels += self.records(comp, instr, works[instr.name], times, *moved[instr.name])
            if instr.opcode.removesuffix("-start") in COLLECTIVES:
                self.collectives.add(comp, instr, times, self.scoper.scope(comp, instr))
            if instr.opcode == "while":
                trips = trip_count(self.module, instr)
                if trips is None:
                    self.notes.add(f"a loop ({instr.name}) has no readable trip count: counted once")
                self.walk(self.module.computations[instr.called("body")], times * (trips or 1))
            elif instr.opcode == "conditional":
                self.notes.add(f"a conditional ({instr.name}) is not counted: which of its branches runs is not "
                               "in the program")
            elif instr.opcode in ("call", "async-start"):
                self.walk(self.module.computations[instr.called("to_apply") or instr.called("calls")], times)

    def records(self, comp: Computation, instr: Instr, work: Work, times: int, read=0.0, written=0.0,
                arguments=0.0) -> list[Kernel]:
        """The kernel record of one instruction (none when it does no work and moves nothing)."""
        cost = work.cost + Cost(bytes_read=read, bytes_written=written, argument_bytes=arguments)
        if not cost:
            return []
        return [Kernel(instr.name, work.kind, self.scoper.scope(comp, instr), times, cost, work.shape, work.dtypes,
                       gemms=work.gemms)]

    def grouped(self, comp: Computation, kernel_of: dict[str, str], works: dict[str, Work], times: int,
                scope, kind: str | None = None) -> list[Kernel]:
        """Records of kernels made of several instructions: each outside input read once, only what is read outside
        written (Buffers.kernel_bytes); the FLOPs of all members; the kind, shape and part of its first matmul, else
        of its first member (or `kind`). `scope`: an instruction -> its part."""
        members = defaultdict(list)
        for instr in comp.instrs:
            if instr.name in kernel_of:
                members[kernel_of[instr.name]].append(instr)
        moved = self.buffers.kernel_bytes(comp, kernel_of)
        out = []
        for kernel, instrs in members.items():
            lead = next((i for i in instrs if works[i.name].kind == "matmul"), instrs[0])
            read, written, arguments = moved.get(kernel, (0.0, 0.0, 0.0))
            cost = sum((works[i.name].cost for i in instrs), Cost(bytes_read=read, bytes_written=written,
                                                                   argument_bytes=arguments))
            work = joined([works[i.name] for i in instrs]) or works[lead.name]
            out.append(Kernel(lead.name, kind or work.kind, scope(lead), times, cost, work.shape, work.dtypes,
                              len(instrs), gemms=work.gemms))
        return out

    def serving_kernels(self, comp: Computation, members: set[str], works: dict[str, Work],
                        moved: dict[str, tuple], times: int) -> list[Kernel]:
        """The computation's kernels as serving engines' fused kernels run them (tracer.read.fusion); work that
        moves no data (index arithmetic) keeps a record of its own."""
        nodes = [i for i in comp.instrs if i.name not in members and i.opcode not in NO_TRAFFIC
                 and not self.buffers.is_view(i)]  # collectives too: kernels of their own, moving their buffers
        kernel_of, _ = fusion.kernels(self.buffers, comp, nodes)
        sizes = defaultdict(int)
        for kernel in kernel_of.values():
            sizes[kernel] += 1
        shared = {name: kernel for name, kernel in kernel_of.items() if sizes[kernel] > 1}
        out = self.grouped(comp, shared, works, times, scope=lambda instr: self.scoper.scope(comp, instr))
        for instr in comp.instrs:
            if instr.name in members or instr.name in shared:
                continue
            bytes_moved = moved[instr.name] if instr.name in kernel_of else ()
            out += self.records(comp, instr, works[instr.name], times, *bytes_moved)
        return out


def read_program(module: Module, f32_as: str | None, scopes, vector_dtype: str = "bfloat16",
                 on_chip: frozenset = frozenset()) -> ProgramCost:
    """One device's step. f32_as: the width the CPU compiler's f32 stands for (None elsewhere); scopes: the model's
    named scopes (models.scopes.SCOPES); vector_dtype: the model's activation dtype, the precision of its
    elementwise work; on_chip: memory spaces whose buffers are not device memory (TPU: {1, 2})."""
    reader = Reader(module, f32_as, on_chip, vector_dtype, scopes)
    entry = module.computations[module.entry]
    reader.walk(entry, 1)
    peak, outputs = liveness.peak_live(reader.buffers, entry, True, reader.region)
    notes = reader.notes | {f"{op} has no counting rule: charged its reads and writes, no FLOPs"
                            for op in sorted(reader.counter.unruled)}
    experts = sum(k.total.argument_bytes for k in reader.kernels if k.scope == scopes.routed_experts)
    return ProgramCost(tuple(reader.kernels), tuple(reader.fused), peak, outputs, reader.collectives.result(),
                       tuple(sorted(notes)), experts)
