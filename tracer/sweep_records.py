"""A sweep's records and what is written of them: each point's record ({"inputs", "cached", "result" | "error"}),
its CSV row, the sweep.csv and sweep.jsonl files, and the checks that a stored result holds every figure a reader
needs. Records are read from files (the sweep's workers, its cache, `tracer report`), so they are JSON; StoredResult
is the one place that reads a stored trace's keys, and what every reader of records reads instead.
"""

import csv
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from base.inputs import ConfigError

CSV_COLUMNS = ("model", "system", "strategy", "compiler", "batch", "prompt", "context", "weights", "kv_cache", "fits",
               "max_batch", "prefill_ms", "decode_ms", "prefill_bound", "decode_bound", "usd_per_mtok_in",
               "usd_per_mtok_out", "output_to_input", "tokens_per_s_per_chip", "tokens_per_s_per_user",
               "decode_hbm_bytes", "decode_kv_share", "decode_comm_bytes", "cached", "error")


def readable(result, read) -> bool:
    """Whether `read(result)` finds every figure it needs: a trace object, not an error, of the right shape."""
    if not isinstance(result, dict) or "error" in result:
        return False
    try:
        read(result)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError):  # ConfigError is a ValueError
        return False
    return True


def valid_result(result) -> bool:
    """A trace object the outputs can use: every figure a row reads present and of its type."""
    return readable(result, lambda r: row({"inputs": {}, "cached": False, "result": r}))


class Results:
    """A sweep's output folder: checked before the first point, sweep.jsonl written a line as each point finishes,
    and sweep.jsonl and sweep.csv of every finished point, in the sweep's order, at the end (or when it is stopped).
    A folder holding another sweep's results (other points) is refused unless `overwrite`; the same sweep run again
    replaces its own."""

    def __init__(self, out_dir: str, points: list, overwrite: bool = False, serving: bool = False):
        """points: tracer.sweep.SweepPoint, or tracer.serving_sweep.ServingPoint (serving: their CSV columns)."""
        self.serving = serving
        self.folder = Path(out_dir)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: cannot make that folder ({err.strerror or err}); choose a writable "
                              "folder") from None
        jsonl = self.folder / "sweep.jsonl"
        mine = {json.dumps(dataclasses.asdict(p), sort_keys=True) for p in points}
        found = _points_in(jsonl) if jsonl.exists() or (self.folder / "sweep.csv").exists() else set()
        if not overwrite and found != mine and found != set():  # an empty one: a sweep that stopped before a point
            raise ConfigError(f"--out {out_dir} already holds another sweep's results; choose another folder, or "
                              "pass --overwrite to replace them")
        try:
            self.file = jsonl.open("w", encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: cannot write there ({err.strerror or err}); choose a writable "
                              "folder") from None

    def add(self, record: dict):
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self, records: list[dict]) -> tuple[Path, Path]:
        self.file.close()
        done = [r for r in records if r is not None]
        return write(done, str(self.folder), *((SERVING_COLUMNS, serving_row) if self.serving else ()))


def _points_in(jsonl: Path) -> set[str] | None:
    """The points of the sweep whose results are in `jsonl` (None: unreadable)."""
    try:
        with jsonl.open(encoding="utf-8") as f:
            return {json.dumps(json.loads(line)["inputs"], sort_keys=True) for line in f if line.strip()}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return value


def _text(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


@dataclass(frozen=True)
class StoredPhase:
    """One phase of a stored trace (tracer.results.Phase.to_dict), per device: what reports read of it."""

    usd_per_mtok: float
    step_s: float
    compute_s: float
    memory_s: float
    comms_s: float
    bound: str
    tokens_per_s_per_chip: float
    hbm_bytes: float
    comm_bytes: float
    kv_cache_bytes: float  # held by the device
    fits: bool
    kv_read_bytes: float = math.nan  # of it, what a decode step reads (stored traces before 2026-12-01: all of it)

    @staticmethod
    def read(d: dict) -> "StoredPhase":
        t, m = d["time_s"], d["memory_per_device"]
        if not isinstance(m["fits"], bool):
            raise TypeError("fits is not a bool")
        return StoredPhase(_number(d["usd_per_mtok"]), _number(t["step"]), _number(t["compute"]),
                           _number(t["memory"]), _number(t["comms"]), _text(d["bound"]),
                           _number(d["tokens_per_s_per_chip"]), _number(d["hbm_bytes_per_device"]),
                           _number(d["comm_bytes_per_device"]), _number(m["kv_cache"]), m["fits"],
                           _number(d.get("kv_cache_read_per_device", m["kv_cache"])))

    @property
    def kv_share(self) -> float:
        """The KV cache's share of the step's HBM bytes: what a decode step reads of the cache a device holds (all of
        it, but under sparse attention the index keys and the chosen rows)."""
        read = self.kv_cache_bytes if math.isnan(self.kv_read_bytes) else self.kv_read_bytes
        return read / self.hbm_bytes


@dataclass(frozen=True)
class StoredResult:
    """A stored trace (tracer.results.TraceResult.to_dict), as reports read it."""

    model: str
    system: str
    strategy: str
    compiler: str
    batch: int
    batch_requested: int | str  # what the point asked for: a batch, or "max"
    prompt: int
    context: int
    max_batch: int
    max_batch_note: str
    weights_dtype: str
    kv_cache_dtype: str
    total_params: float
    active_params: float
    usd_per_chip_hour: float
    output_to_input_cost: float
    prefill: StoredPhase
    decode: StoredPhase

    @staticmethod
    def read(r: dict) -> "StoredResult":
        """Every figure a reader needs, of its type (KeyError, TypeError: not a whole trace)."""
        return StoredResult(
            _text(r["model"]), _text(r["system"]), _text(r["strategy"]), _text(r["compiler"]), _number(r["batch"]),
            r.get("batch_requested", r["batch"]), _number(r["prompt"]), _number(r["context"]),
            _number(r["max_batch"]), _text(r["max_batch_note"]), _text(r["weights_dtype"]),
            _text(r["kv_cache_dtype"]), _number(r["total_params"]), _number(r["active_params"]),
            _number(r["usd_per_chip_hour"]), _number(r["output_to_input_cost"]), StoredPhase.read(r["prefill"]),
            StoredPhase.read(r["decode"]))

    @property
    def searched(self) -> bool:
        """Whether the largest batch that fits was searched for."""
        return self.max_batch_note != "not searched"


def row(record: dict) -> dict:
    """One CSV row: the point's inputs and its headline figures."""
    inputs = record["inputs"]
    out = {k: inputs.get(k) for k in ("model", "system", "strategy", "compiler", "batch", "prompt", "context",
                                      "weights", "kv_cache")}
    out["cached"] = record["cached"]
    if "error" in record:
        return {**out, "error": record["error"]}
    r = StoredResult.read(record["result"])
    pre, dec = r.prefill, r.decode
    out.update(prompt=r.prompt, weights=r.weights_dtype, kv_cache=r.kv_cache_dtype, fits=dec.fits,
               max_batch=r.max_batch if r.searched else "", prefill_ms=pre.step_s * 1e3, decode_ms=dec.step_s * 1e3,
               prefill_bound=pre.bound, decode_bound=dec.bound, usd_per_mtok_in=pre.usd_per_mtok,
               usd_per_mtok_out=dec.usd_per_mtok, output_to_input=r.output_to_input_cost,
               tokens_per_s_per_chip=dec.tokens_per_s_per_chip, tokens_per_s_per_user=1 / dec.step_s,
               decode_hbm_bytes=dec.hbm_bytes, decode_kv_share=dec.kv_share, decode_comm_bytes=dec.comm_bytes,
               error="")
    return out


SERVING_COLUMNS = ("model", "system", "strategy", "compiler", "isl", "osl", "batch", "weights", "kv_cache",
                   "concurrency", "tpot_ms", "ttft_ms", "tokens_per_s_per_user", "output_tokens_per_s_per_chip",
                   "usd_per_mtok_in", "usd_per_mtok_out", "usd_per_mtok_blended", "decode_steps", "cached", "error")


def serving_row(record: dict) -> dict:
    """One CSV row of a serving sweep: the point's inputs and its steady state's headline figures."""
    inputs = record["inputs"]
    out = {k: inputs.get(k) for k in SERVING_COLUMNS[:9]}
    out["cached"] = record["cached"]
    if "error" in record:
        return {**out, "error": record["error"]}
    r = record["result"]
    out.update(concurrency=r["concurrency"], tpot_ms=r["tpot_s"] * 1e3, ttft_ms=r["ttft_s"] * 1e3,
               tokens_per_s_per_user=1 / r["tpot_s"], output_tokens_per_s_per_chip=r["output_tokens_per_s_per_chip"],
               usd_per_mtok_in=r["usd_per_mtok_input"], usd_per_mtok_out=r["usd_per_mtok_output"],
               usd_per_mtok_blended=r["usd_per_mtok_blended"], decode_steps=r["compiled"][0].split(": ", 1)[-1],
               error="")
    return out


def write(records: list[dict], out_dir: str, columns=CSV_COLUMNS, make_row=row) -> tuple[Path, Path]:
    """sweep.csv (one row per point) and sweep.jsonl (one object per point: inputs, and the trace or the error)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, jsonl_path = folder / "sweep.csv", folder / "sweep.jsonl"
    with (folder / "sweep.csv.tmp").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow(make_row(record))
    with (folder / "sweep.jsonl.tmp").open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    (folder / "sweep.csv.tmp").replace(csv_path)  # each whole or not at all
    (folder / "sweep.jsonl.tmp").replace(jsonl_path)
    return csv_path, jsonl_path


SCREENED_POINT = ("model", "system", "strategy", "compiler", "batch", "prompt", "context", "weights", "kv_cache")
SCREENED_COLUMNS = (*SCREENED_POINT, "tokens_per_s_per_user", "usd_per_mtok_out", "fits", "miss")


def write_screened(dropped: list, folder: Path) -> Path:
    """screened.csv: the points `tracer sweep --screen` did not compile, with their estimates and how far each lies
    from its workload's front (inf: its weights and KV cache do not fit)."""
    path = folder / "screened.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(SCREENED_COLUMNS)
        for e, off in dropped:
            writer.writerow([*(getattr(e.point, k) for k in SCREENED_POINT), f"{e.tokens_per_s_per_user:.6g}",
                             f"{e.usd_per_mtok_out:.6g}", e.fits, f"{off:.4g}"])
    return path


def read_screened(results: str) -> list[dict]:
    """The rows of the screened.csv beside a sweep's results (its folder or its sweep.jsonl); none: []."""
    source = Path(results)
    path = (source if source.is_dir() else source.parent) / "screened.csv"
    try:
        return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
