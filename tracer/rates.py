"""Achieved rates: what a chip really reaches, per kind of kernel (issue 16, section 2), as data.

A rates file is TOML, one per chip kind (meshes/rates/<chip>.toml, each figure with its source), or one written by
`tracer calibrate` on a real accelerator (`--calibration FILE`). Every rate is a fraction of the chip's datasheet
figure (meshes.systems.Chip), so a file serves every system of that chip:

    chip = "H100 SXM"                   # must name the system's chip
    origin = "published figures"        # or "tracer calibrate on <device>, <date>"
    [matmul]                            # a GEMM's FLOP/s, as a fraction of the dense peak of its precision, by the
    m = [1, 64, 256, 1024, 4096]        #   smaller of its M and N (tokens, at decode), log-linear between points
    bfloat16 = [...]                    #   (float32 takes bfloat16's, int8 and float4 float8's where absent)
    float8 = [...]
    [memory]        fraction            # HBM bandwidth a streaming kernel sustains
    [attention]     prefill, decode     # flash prefill: of the dense peak; decode over the cache: of HBM bandwidth
    [kernel]        floor_s             # the least a kernel takes (launch and tail, in a CUDA graph)
    [collectives]   scale_up_bytes, scale_up_s  # an 8-GPU all-reduce's seconds per call by its operand's bytes (the
                                        #   best of NCCL and the engines' one-shot kernels), log-log between points
                    scale_out_fraction, scale_out_latency_s  # across domains: of the NIC's rate, a latency a call
    [iteration]     overhead_s          # an engine's host work per step (scheduling, sampling) not hidden
                    per_sequence_s      # optional (0 without): more host work a step per sequence its scheduler
                                        #   runs (each data-parallel replica has its own)
    [moe]           m, bfloat16, ...    # optional: a routed expert GEMM's time as a fraction of its own roofline
                                        #   (max(FLOPs at peak, bytes at HBM bandwidth)), by tokens per expert, per
                                        #   kind of expert weights (MOE_ROWS); without it experts are dense GEMMs
    each table has `source` (where its figures come from).
"""

import math
from dataclasses import dataclass
from pathlib import Path

from base.inputs import ConfigError, is_number, read_toml

RATES_DIR = Path(__file__).resolve().parent.parent / "meshes" / "rates"
TABLES = {"matmul": ("m",), "memory": ("fraction",), "attention": ("prefill", "decode"), "kernel": ("floor_s",),
          "collectives": ("scale_up_bytes", "scale_up_s", "scale_out_fraction", "scale_out_latency_s"),
          "iteration": ("overhead_s",)}
FRACTIONS = ("fraction", "prefill", "decode", "scale_out_fraction")
LISTS = ("m", "scale_up_bytes", "scale_up_s")
NEAREST = {"float32": "bfloat16", "int8": "float8", "float4": "float8"}  # a precision without a row of its own
# [moe] rows, by how the compiled program holds and computes the expert weights (tracer.timing.moe_row)
MOE_ROWS = ("bfloat16", "float8", "float4", "w4a16")


def log_linear(xs, ys, x: float) -> float:
    """ys at x, log-linear in x between the points xs (rising), flat beyond them."""
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            t = (math.log(x) - math.log(xs[i - 1])) / (math.log(xs[i]) - math.log(xs[i - 1]))
            return ys[i - 1] + t * (ys[i] - ys[i - 1])
    return ys[-1]


@dataclass(frozen=True)
class Rates:
    chip: str
    origin: str
    path: str
    matmul_m: tuple[float, ...]
    matmul: dict  # dtype -> fractions at matmul_m
    memory: float
    attention_prefill: float
    attention_decode: float
    kernel_floor_s: float
    scale_up_bytes: tuple[float, ...]
    scale_up_s: tuple[float, ...]
    scale_out_fraction: float
    scale_out_latency_s: float
    overhead_s: float
    sources: dict  # table -> its source
    moe_m: tuple[float, ...] = ()  # tokens per expert of the [moe] table's points (empty: no [moe] table)
    moe: dict | None = None  # MOE_ROWS name -> fractions of a routed expert GEMM's roofline at moe_m
    per_sequence_s: float = 0.0  # host work a step per sequence of its scheduler, beside overhead_s

    def overhead(self, sequences: float) -> float:
        """Seconds of host work not hidden in a step whose scheduler (a data-parallel replica's) runs `sequences`."""
        return self.overhead_s + self.per_sequence_s * sequences

    def matmul_fraction(self, dtype: str, m: float) -> float:
        """Of the dense peak of `dtype`, a GEMM whose smaller output side is m (log-linear between the table's
        points, flat beyond them)."""
        row = self.matmul.get(dtype) or self.matmul.get(NEAREST.get(dtype, "")) or self.matmul["bfloat16"]
        return log_linear(self.matmul_m, row, m)

    def moe_fraction(self, row: str, m: float) -> float | None:
        """Of its roofline, a routed expert GEMM whose experts get m tokens each (log-linear between the [moe]
        table's points, flat beyond); None where the table has no such row (the GEMM is then priced as a dense
        one)."""
        fractions = (self.moe or {}).get(row)
        return None if fractions is None else log_linear(self.moe_m, fractions, m)

    def all_reduce_s(self, operand_bytes: float) -> float:
        """Seconds of one 8-GPU all-reduce of `operand_bytes` inside a domain: log-log between the measured points,
        the first point's time below them, the last point's bandwidth beyond."""
        xs, ts = self.scale_up_bytes, self.scale_up_s
        if operand_bytes <= xs[0]:
            return ts[0]
        for i in range(1, len(xs)):
            if operand_bytes <= xs[i]:
                t = (math.log(operand_bytes) - math.log(xs[i - 1])) / (math.log(xs[i]) - math.log(xs[i - 1]))
                return math.exp(math.log(ts[i - 1]) + t * (math.log(ts[i]) - math.log(ts[i - 1])))
        return ts[-1] * operand_bytes / xs[-1]

    def describe(self) -> str:
        return f"achieved rates: {self.chip}, {self.origin} ({self.path})"

    def to_toml(self) -> str:
        """The file this was read from, as text (tracer calibrate writes it)."""
        def value(v) -> str:
            if isinstance(v, str):
                return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if isinstance(v, tuple | list):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return repr(float(v)) if isinstance(v, float) else str(v)

        tables = {
            "matmul": {"m": list(self.matmul_m), **{k: list(v) for k, v in self.matmul.items()}},
            "memory": {"fraction": self.memory}, "attention": {"prefill": self.attention_prefill,
                                                               "decode": self.attention_decode},
            "kernel": {"floor_s": self.kernel_floor_s},
            "collectives": {"scale_up_bytes": list(self.scale_up_bytes), "scale_up_s": list(self.scale_up_s),
                            "scale_out_fraction": self.scale_out_fraction,
                            "scale_out_latency_s": self.scale_out_latency_s},
            "iteration": {"overhead_s": self.overhead_s, "per_sequence_s": self.per_sequence_s}}
        if self.moe:
            tables["moe"] = {"m": list(self.moe_m), **{k: list(v) for k, v in self.moe.items()}}
        lines = [f"chip = {value(self.chip)}", f"origin = {value(self.origin)}"]
        for name, table in tables.items():
            lines += ["", f"[{name}]"] + [f"{k} = {value(v)}" for k, v in table.items()]
            lines.append(f"source = {value(self.sources.get(name, ''))}")
        return "\n".join(lines) + "\n"


def rates_file(chip_key: str) -> Path:
    return RATES_DIR / f"{chip_key}.toml"


def load_rates(path: str | Path, chip_name: str | None = None, shown: str | None = None) -> Rates:
    """A rates file, checked: every table and figure present, fractions in (0, 1.5], times >= 0; `chip_name`: the
    system's chip, which the file must name."""
    where = f"rates file {path}"
    data = read_toml(str(path), where, " (tracer calibrate --out FILE writes one)")
    for key in ("chip", "origin"):
        if not isinstance(data.get(key), str):
            raise ConfigError(f"{where}: needs `{key} = \"...\"` at the top")
    for table, keys in TABLES.items():
        t = data.get(table)
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: needs a [{table}] table with {', '.join(keys)} and source")
        for key in keys:
            if key not in t:
                raise ConfigError(f"{where}: [{table}] needs `{key}`")
            bad = not is_number(t[key]) or t[key] < 0 or (key in FRACTIONS and not 0 < t[key] <= 1.5)
            if key not in LISTS and bad:
                raise ConfigError(f"{where}: [{table}] {key} = {t[key]!r} is not a "
                                  f"{'fraction in (0, 1.5]' if key in FRACTIONS else 'number of seconds >= 0'}")
    mm = data["matmul"]
    xs = mm["m"]
    if not (isinstance(xs, list) and xs and all(is_number(x) and x > 0 for x in xs) and xs == sorted(set(xs))):
        raise ConfigError(f"{where}: [matmul] m must be a rising list of positive sizes, got {xs!r}")
    c = data["collectives"]
    sizes, times = c["scale_up_bytes"], c["scale_up_s"]
    if not (isinstance(sizes, list) and isinstance(times, list) and sizes and len(sizes) == len(times)
            and all(is_number(x) and x > 0 for x in sizes + times) and sizes == sorted(set(sizes))):
        raise ConfigError(f"{where}: [collectives] scale_up_bytes must be a rising list of positive sizes and "
                          "scale_up_s as many positive seconds")
    rows = {k: v for k, v in mm.items() if k not in ("m", "source")}
    for dtype, row in rows.items():
        if not (isinstance(row, list) and len(row) == len(xs) and all(is_number(x) and 0 < x <= 1.5 for x in row)):
            raise ConfigError(f"{where}: [matmul] {dtype} must list {len(xs)} fractions in (0, 1.5], one per m")
    if "bfloat16" not in rows:
        raise ConfigError(f"{where}: [matmul] needs a bfloat16 row")
    if chip_name is not None and data["chip"] != chip_name:
        raise ConfigError(f"{where} holds rates of the {data['chip']}, not the system's {chip_name}; use one "
                          f"measured on a {chip_name} (tracer calibrate), or leave out --calibration")
    moe_m, moe = _moe(data.get("moe"), where)
    per_sequence = data["iteration"].get("per_sequence_s", 0.0)
    if not is_number(per_sequence) or per_sequence < 0:
        raise ConfigError(f"{where}: [iteration] per_sequence_s = {per_sequence!r} is not a number of seconds >= 0")
    a = data["attention"]
    return Rates(data["chip"], data["origin"], shown or str(path), tuple(float(x) for x in xs),
                 {k: tuple(float(x) for x in v) for k, v in rows.items()}, float(data["memory"]["fraction"]),
                 float(a["prefill"]), float(a["decode"]), float(data["kernel"]["floor_s"]),
                 tuple(float(x) for x in sizes), tuple(float(x) for x in times), float(c["scale_out_fraction"]),
                 float(c["scale_out_latency_s"]), float(data["iteration"]["overhead_s"]),
                 {t: str(data[t].get("source", "")) for t in (*TABLES, "moe") if t in data}, moe_m, moe,
                 float(per_sequence))


def _moe(table, where: str) -> tuple[tuple[float, ...], dict | None]:
    """The optional [moe] table, checked: (its points, its rows) or ((), None) without one."""
    if table is None:
        return (), None
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [moe] must be a table with m, rows of fractions and source")
    xs = table.get("m")
    if not (isinstance(xs, list) and xs and all(is_number(x) and x > 0 for x in xs) and xs == sorted(set(xs))):
        raise ConfigError(f"{where}: [moe] m must be a rising list of positive tokens per expert, got {xs!r}")
    rows = {k: v for k, v in table.items() if k not in ("m", "source")}
    for name, row in rows.items():
        if name not in MOE_ROWS:
            raise ConfigError(f"{where}: [moe] has a row {name!r}; rows are {', '.join(MOE_ROWS)}")
        if not (isinstance(row, list) and len(row) == len(xs) and all(is_number(x) and 0 < x <= 1.5 for x in row)):
            raise ConfigError(f"{where}: [moe] {name} must list {len(xs)} fractions in (0, 1.5], one per m")
    return tuple(float(x) for x in xs), {k: tuple(float(x) for x in v) for k, v in rows.items()}


def rates_for(chip, calibration: str | None = None, ideal: bool = False) -> tuple[Rates | None, str]:
    """(the rates a system's chip is priced at, or None for the pure roofline at peak; which, in words)."""
    if ideal:
        if calibration is not None:
            raise ConfigError("--ideal prices every kernel at the chip's peak; leave out --calibration with it")
        return None, "ideal roofline: every kernel at the chip's peaks (--ideal)"
    if calibration is not None:
        rates = load_rates(calibration, chip.name)
        return rates, rates.describe()
    path = rates_file(chip.rates) if chip.rates else None
    if path is None or not path.exists():
        return None, (f"ideal roofline: no achieved-rate data for the {chip.name} (meshes/rates/), so every kernel "
                      "is at the chip's peaks; tracer calibrate on one writes them")
    rates = load_rates(path, chip.name, f"meshes/rates/{path.name}")
    return rates, rates.describe()
