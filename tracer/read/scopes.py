"""Which part of the model an instruction comes from, by the named scopes in its op_name metadata. The names and
their parts are the model's (models.scopes.Scopes), handed in."""

from tracer.read.hlo import Computation, Instr, Module


class Scoper:
    def __init__(self, module: Module, scopes):
        self.module, self.parts, self.other = module, scopes.parts, scopes.other
        self.found: dict[tuple[str, str], str] = {}
        self.users_of: dict[str, dict] = {}

    def rank(self, op_name: str) -> int:
        """The position in `parts` of the innermost named scope in `op_name` (len(parts): none)."""
        path = "/" + op_name + "/"
        return next((k for k, (key, _) in enumerate(self.parts) if f"/{key}/" in path), len(self.parts))

    def part_of(self, op_name: str) -> str:
        rank = self.rank(op_name)
        return self.parts[rank][1] if rank < len(self.parts) else self.other

    def scope(self, comp: Computation, instr: Instr) -> str:
        """The part of the model `instr` belongs to (found once: every walk asks)."""
        key = (comp.name, instr.name)
        if key not in self.found:
            self.found[key] = self._find(comp, instr)
        return self.found[key]

    def _find(self, comp: Computation, instr: Instr) -> str:
        """An instruction the compiler left without metadata (CPU's rewritten dots) takes the part of its nearest
        operands, then users, that lie in a named part (the slice of a stacked weight, outside every part, does not
        decide)."""
        if comp.name not in self.users_of:
            self.users_of[comp.name] = comp.users()
        users, seen, ring = self.users_of[comp.name], {instr.name}, [instr]
        if name := self.op_name(instr):
            return self.part_of(name)
        for _ in range(6):  # nearest neighbours with metadata, through views and converts: the innermost part
            rank = min((self.rank(self.op_name(i)) for i in ring), default=len(self.parts))
            if rank < len(self.parts):
                return self.parts[rank][1]
            ring = [n for i in ring for n in [*(comp.by_name[o] for o in i.operands if o in comp.by_name),
                                               *users.get(i.name, [])] if n.name not in seen]
            seen.update(n.name for n in ring)
        return self.other

    def op_name(self, instr: Instr) -> str:
        """An instruction's op_name, or for a fusion without one, that of the last fused instruction with one."""
        if instr.op_name or instr.opcode != "fusion":
            return instr.op_name
        body = self.module.computations[instr.called("calls")]
        return next((i.op_name for i in reversed(body.instrs) if i.op_name), "")
