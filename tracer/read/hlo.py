"""Parse the text of a compiled, SPMD-partitioned HLO module into computations and instructions.

Only the parts the analysis needs: result types, opcodes, operands, called computations and the attributes that
carry replica groups, trip counts, dot dimensions and op metadata. Works on the CPU, GPU and TPU printers
(tuple types, layouts with tiling, async collective pairs, the three replica-group notations).
"""

import math
import re
from dataclasses import dataclass, field

import numpy as np

DTYPE_BITS = {
    "pred": 8, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "s16": 16, "u16": 16, "s32": 32, "u32": 32, "s64": 64, "u64": 64,
    "f16": 16, "bf16": 16, "f32": 32, "f64": 64, "f8e4m3fn": 8, "f8e5m2": 8, "f8e4m3": 8, "f8e4m3fnuz": 8,
    "f8e5m2fnuz": 8, "f8e8m0fnu": 8, "f4e2m1fn": 4, "c64": 64, "c128": 128, "token": 0,
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\](?:\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\})?")
_SPACE = re.compile(r"S\((\d+)\)")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([^\s(]+)\s*\(.*->.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)$")
_OPERAND = re.compile(r"%([^\s,()]+)")


@dataclass(frozen=True)
class Array:
    dtype: str
    dims: tuple[int, ...]
    layout: tuple[int, ...] | None = field(default=None, compare=False)  # minor to major, as printed
    space: int = field(default=0, compare=False)  # memory space: 0 device memory; TPU: 1 VMEM, 2 SMEM (on chip)

    def order(self) -> tuple[int, ...] | None:
        """The dimensions that are not 1, major to minor in memory: two arrays with the same order and dims hold
        the same bytes in the same places."""
        if self.layout is None:
            return None
        return tuple(d for d in reversed(self.layout) if self.dims[d] != 1)

    @property
    def elements(self) -> int:
        return math.prod(self.dims)

    @property
    def bytes(self) -> float:
        return self.elements * DTYPE_BITS.get(self.dtype, 32) / 8


@dataclass
class Instr:
    name: str
    arrays: list[Array]  # the result: one array, or the leaves of a tuple
    is_tuple: bool
    opcode: str
    operands: list[str]
    attrs: str  # everything after the operand list, unparsed
    args: str = ""  # the operand list as printed (a constant's literal)
    is_root: bool = False

    def attr(self, key: str) -> str | None:
        """The value of `key=...` (balanced braces/brackets, or up to the next comma)."""
        start = self.attrs.find(key + "=")
        if start < 0:
            return None
        return _balanced_value(self.attrs, start + len(key) + 1)

    def called(self, key: str) -> str | None:
        value = self.attr(key)
        return value.lstrip("%") if value else None

    @property
    def op_name(self) -> str:
        m = re.search(r'op_name="([^"]*)"', self.attrs)
        return m.group(1) if m else ""


@dataclass
class Computation:
    name: str
    instrs: list[Instr] = field(default_factory=list)
    by_name: dict[str, Instr] = field(default_factory=dict)

    @property
    def root(self) -> Instr:
        return next((i for i in self.instrs if i.is_root), self.instrs[-1])

    def users(self) -> dict[str, list[Instr]]:
        users: dict[str, list[Instr]] = {}
        for instr in self.instrs:
            for op in instr.operands:
                users.setdefault(op, []).append(instr)
        return users


@dataclass
class Module:
    computations: dict[str, Computation]
    entry: str
    num_partitions: int


def _balanced_value(text: str, i: int) -> str:
    """Read one attribute value starting at text[i]: a balanced {...}/[...] group, plus what is glued to it."""
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
            if depth < 0:
                break
        elif c == "," and depth == 0:
            # the mesh notation has a space-separated second part: mesh[...] {'axis'}
            break
        elif c == '"':
            j = text.index('"', j + 1)
        j += 1
    return text[i:j].strip()


def _split_type(rest: str) -> tuple[str, str]:
    """Split 'TYPE opcode(...)...' into the type text and the remainder."""
    if rest.startswith("("):
        depth = 0
        for j, c in enumerate(rest):
            depth += c == "("
            depth -= c == ")"
            if depth == 0:
                return rest[: j + 1], rest[j + 1 :].lstrip()
    head, _, tail = rest.partition(" ")
    return head, tail


def _minor_to_major(layout: str) -> tuple[int, ...] | None:
    """`2,1,0` or TPU's `2,1,0:T(8,128)(2,1)S(1)`: the dimension order before any tiling and memory space."""
    order = layout.split(":")[0]
    return tuple(int(x) for x in order.split(",") if x) if order.strip() else None


def _space(layout: str) -> int:
    m = _SPACE.search(layout.split(":", 1)[1]) if ":" in layout else None
    return int(m.group(1)) if m else 0


def _parse_instr(line: str) -> Instr | None:
    m = _INSTR.match(line)
    if not m:
        return None
    type_text, rest = _split_type(m.group(3))
    opcode, paren, after = rest.partition("(")
    if not paren:
        return None
    depth, j = 1, 0
    while depth and j < len(after):
        depth += after[j] == "("
        depth -= after[j] == ")"
        j += 1
    operand_text, attrs = after[: j - 1], after[j:]
    arrays = [Array(d, tuple(int(x) for x in dims.split(",") if x), _minor_to_major(layout), _space(layout))
              for d, dims, layout in _ARRAY.findall(type_text)]
    return Instr(m.group(2), arrays, type_text.startswith("("), opcode.strip(), _OPERAND.findall(operand_text),
                 attrs.lstrip(", "), operand_text, bool(m.group(1)))


def _same_bytes(a: list[Array], b: list[Array]) -> bool:
    return (len(a) == len(b) == 1 and a[0].dims == b[0].dims and a[0].dtype == b[0].dtype
            and a[0].order() is not None and a[0].order() == b[0].order())


def parse_module(text: str) -> Module:
    computations: dict[str, Computation] = {}
    entry, current = "", None
    partitions = re.search(r"num_partitions=(\d+)", text)
    for line in text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = Computation(m.group(2))
                computations[current.name] = current
                entry = current.name if m.group(1) else entry
            continue
        if line.strip() == "}":
            current = None
            continue
        instr = _parse_instr(line)
        if instr:
            operand = current.by_name.get(instr.operands[0]) if instr.operands else None
            if instr.opcode == "copy" and operand is not None and _same_bytes(operand.arrays, instr.arrays):
                instr.opcode = "bitcast"  # a copy that moves nothing (layouts differing only in dims of size 1)
            current.instrs.append(instr)
            current.by_name[instr.name] = instr
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text")
    return Module(computations, entry, int(partitions.group(1)) if partitions else 1)


def replica_groups(instr: Instr, num_devices: int) -> list[list[int]]:
    """Device groups of a collective, from any of the three notations (or source_target_pairs)."""
    pairs = instr.attr("source_target_pairs")
    if pairs:
        return [[int(x) for x in re.findall(r"\d+", p)] for p in re.findall(r"\{([\d,\s]+)\}", pairs)]
    text = instr.attr("replica_groups")
    if not text or text == "{}":
        return [list(range(num_devices))]
    if text.startswith("mesh["):  # mesh['axis_0'=2,'axis_1'=4] {'axis_1'}
        axes = re.findall(r"'([^']+)'=(\d+)", text)
        reduced = re.findall(r"'([^']+)'", text[text.index("]") + 1 :])
        names, sizes = [a for a, _ in axes], [int(s) for _, s in axes]
        ids = np.arange(math.prod(sizes)).reshape(sizes)
        keep = [i for i, a in enumerate(names) if a not in reduced]
        moved = np.transpose(ids, keep + [names.index(a) for a in reduced])
        return moved.reshape(-1, math.prod(sizes[names.index(a)] for a in reduced)).tolist()
    if text.startswith("["):  # iota: [G,S]<=[dims] with an optional T(perm)
        m = re.match(r"\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", text)
        out_shape = [int(x) for x in m.group(1).split(",")]
        ids = np.arange(math.prod(out_shape)).reshape([int(x) for x in m.group(2).split(",")])
        if m.group(3):
            ids = ids.transpose([int(x) for x in m.group(3).split(",")])
        return ids.reshape(out_shape[0], -1).tolist()
    return [[int(x) for x in re.findall(r"\d+", g)] for g in re.findall(r"\{([\d,\s]*)\}", text[1:-1])]


def trip_count(module: Module, loop: Instr) -> int | None:
    """A while loop's trip count: backend_config's known_trip_count, else `i < constant` in its condition (or in
    the fusion it calls: GPU programs fuse the compare)."""
    m = re.search(r'"known_trip_count":\{"n":"(\d+)"', loop.attrs)
    if m:
        return int(m.group(1))
    cond = module.computations.get(loop.called("condition") or "")
    if cond is None:
        return None
    comps = [cond, *(module.computations[c] for i in cond.instrs if (c := i.called("calls")) in module.computations)]
    values = [int(i.args) for comp in comps for i in comp.instrs
              if i.opcode == "constant" and re.fullmatch(r"-?\d+", i.args)]
    return max(values) if values else None
