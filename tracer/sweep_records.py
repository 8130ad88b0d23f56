"""A sweep's records and what is written of them: each point's record ({"inputs", "cached", "result" | "error"}),
its CSV row, the sweep.csv and sweep.jsonl files, and the checks that a stored result holds every figure a reader
needs. Records are read from files (the sweep's workers, its cache, `tracer report`), so they stay dicts.
"""

import csv
import dataclasses
import json
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

    def __init__(self, out_dir: str, points: list, overwrite: bool = False):  # points: tracer.sweep.SweepPoint
        self.folder = Path(out_dir)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: cannot make that folder ({err.strerror or err}); choose a writable "
                              "folder") from None
        jsonl = self.folder / "sweep.jsonl"
        mine = {json.dumps(dataclasses.asdict(p), sort_keys=True) for p in points}
        if not overwrite and (jsonl.exists() or (self.folder / "sweep.csv").exists()) and _points_in(jsonl) != mine:
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
        return write([r for r in records if r is not None], str(self.folder))


def _points_in(jsonl: Path) -> set[str] | None:
    """The points of the sweep whose results are in `jsonl` (None: unreadable)."""
    try:
        with jsonl.open(encoding="utf-8") as f:
            return {json.dumps(json.loads(line)["inputs"], sort_keys=True) for line in f if line.strip()}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def kv_share(decode: dict) -> float:
    """The KV cache's share of a decode step's HBM bytes (the step reads the whole cache a device holds)."""
    return decode["memory_per_device"]["kv_cache"] / decode["hbm_bytes_per_device"]


def row(record: dict) -> dict:
    """One CSV row: the point's inputs and its headline figures."""
    inputs = record["inputs"]
    out = {k: inputs.get(k) for k in ("model", "system", "strategy", "compiler", "batch", "prompt", "context",
                                      "weights", "kv_cache")}
    out["cached"] = record["cached"]
    if "error" in record:
        return {**out, "error": record["error"]}
    r = record["result"]
    pre, dec = r["prefill"], r["decode"]
    out.update(prompt=r["prompt"], weights=r["weights_dtype"], kv_cache=r["kv_cache_dtype"],
               fits=dec["memory_per_device"]["fits"],
               max_batch=r["max_batch"] if r["max_batch_note"] != "not searched" else "",
               prefill_ms=pre["time_s"]["step"] * 1e3, decode_ms=dec["time_s"]["step"] * 1e3,
               prefill_bound=pre["bound"], decode_bound=dec["bound"], usd_per_mtok_in=pre["usd_per_mtok"],
               usd_per_mtok_out=dec["usd_per_mtok"], output_to_input=r["output_to_input_cost"],
               tokens_per_s_per_chip=dec["tokens_per_s_per_chip"], tokens_per_s_per_user=1 / dec["time_s"]["step"],
               decode_hbm_bytes=dec["hbm_bytes_per_device"], decode_kv_share=kv_share(dec),
               decode_comm_bytes=dec["comm_bytes_per_device"],
               error="")
    return out


def write(records: list[dict], out_dir: str) -> tuple[Path, Path]:
    """sweep.csv (one row per point) and sweep.jsonl (one object per point: inputs, and the trace or the error)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, jsonl_path = folder / "sweep.csv", folder / "sweep.jsonl"
    with (folder / "sweep.csv.tmp").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow(row(record))
    with (folder / "sweep.jsonl.tmp").open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    (folder / "sweep.csv.tmp").replace(csv_path)  # each whole or not at all
    (folder / "sweep.jsonl.tmp").replace(jsonl_path)
    return csv_path, jsonl_path
