"""`tracer report validation` (tracer.validation, tracer.reports.validation): the shipped measured rows, the error
and fit arithmetic by hand, and the report end to end on two rows of the tiny model."""

import csv
import dataclasses
import json

import pytest

from base.inputs import ConfigError
from tracer.cli import main
from tracer.errors import Interrupted
from tracer.reports.validation import why
from tracer.validation import FIELDS, Measured, Prediction, fit_overhead, load_measured, mape, without_iteration


def test_the_shipped_rows_span_what_the_issue_asks():
    """At least 30 held-out rows, dense and MoE models, H100, H200 and B200-class systems, two engines or more; every
    row with its source and date, and a split fixed in the file."""
    rows = load_measured()
    held = [r for r in rows if r.split == "held-out"]
    assert len(held) >= 30
    assert {"llama3-8b", "llama3-70b", "deepseek-v3", "mixtral-8x7b"} <= {r.model for r in held}
    assert {"h100", "h200", "b200"} <= {r.system.split("x")[0] for r in held}
    assert len({r.engine for r in held}) >= 2
    assert all(r.source.startswith("http") and r.source_date for r in rows)
    assert len({r.id for r in rows}) == len(rows)


def _row(split: str, measured: float, concurrency=100) -> Measured:
    return Measured("r", split, "tiny", "preset", "bfloat16", "vllm", "0", "h100x1", "tp", 10, 10, concurrency,
                    "offline", measured, "https://x", "2026-01-01", "")


def test_errors_and_the_overhead_fit_by_hand():
    """Two calibration rows of 100 sequences at iterations of 10 ms and 20 ms (priced with no overhead): 10,000 and
    5,000 tokens/s predicted against 8,000 and 4,000 measured. Another 2.5 ms an iteration makes them 100 / 12.5 ms
    = 8,000 and 100 / 22.5 ms = 4,444 (errors 0 and 11.1%); 5 ms makes 6,667 and 4,000 (16.7% and 0): the MAPE is
    least at 2.5 ms (5.6%). The held-out row is not looked at."""
    cal = [Prediction(_row("calibration", 8000), 10_000, 20_000, 0.010, 0.0, 100),
           Prediction(_row("calibration", 4000), 5_000, 10_000, 0.020, 0.0, 100)]
    held = Prediction(_row("held-out", 1), 10_000, 20_000, 0.010, 0.0, 100)
    assert cal[0].error_pct == pytest.approx(25.0) and cal[0].ideal_error_pct == pytest.approx(150.0)
    assert fit_overhead([*cal, held]) == pytest.approx((0.0025, 0.0))  # no sequences recorded: no per-sequence part
    assert cal[1].at_overhead(0.0025) == pytest.approx(100 / 0.0225)
    assert mape([10.0, -30.0]) == 20.0


def test_the_per_sequence_overhead_fit_by_hand():
    """Three calibration rows measured at exactly 2.5 ms + 10 us a sequence its scheduler runs beyond their priced
    kernels (10, 20 and 30 ms, priced with 1 ms of overhead of which none per sequence): 100 sequences on one
    scheduler run 10 + 2.5 + 100 x 0.01 = 13.5 ms an iteration (100 / 13.5 ms = 7,407 tokens/s), 100 over 8
    replicas 20 + 2.5 + 12.5 x 0.01 = 22.625 ms (4,420), 400 on one 30 + 2.5 + 4 = 36.5 ms (10,959). The grid's
    least MAPE is 0 there; the held-out row, measured far off, is not looked at."""
    rows = ((100, 100, 0.010, 0.0135), (100, 12.5, 0.020, 0.022625), (400, 400, 0.030, 0.0365))
    cal = [Prediction(_row("calibration", n / measured_s), n / (kernels + 0.001), 1.0, kernels + 0.001, 0.001, n,
                      sequences=seqs) for n, seqs, kernels, measured_s in rows]
    held = Prediction(_row("held-out", 1), 10_000, 20_000, 0.010, 0.0, 100, sequences=100)
    fixed, per_sequence = fit_overhead([*cal, held])
    assert fixed == pytest.approx(0.0025) and per_sequence == pytest.approx(10e-6)
    assert cal[1].at_overhead(fixed, per_sequence) == pytest.approx(100 / 0.022625)
    assert cal[0].error_pct == pytest.approx(100 * (100 / 0.011 / (100 / 0.0135) - 1))  # as priced: 1 ms, 22.7% fast


def test_reasons_read_the_notes_as_written():
    """"speculative decoding=off" and "no PD disaggregation" give no reason; "speculative decoding=MTP ON" does."""
    off = dataclasses.replace(_row("held-out", 1), notes="no PD disaggregation; speculative decoding=off")
    on = dataclasses.replace(off, notes="random dataset; speculative decoding=MTP ON; dp-attention off")
    assert why(Prediction(off, 1, 1)) == "not known"
    assert why(Prediction(on, 1, 1)).startswith("speculative decoding (MTP) on in the measured run")


def test_bad_measured_files_say_what_to_fix(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,split\nx,calibration\n")
    with pytest.raises(ConfigError, match="needs the columns"):
        load_measured(path)
    row = dict.fromkeys(FIELDS, "1") | {"split": "sometimes", "concurrency": "max"}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerow(row)
    with pytest.raises(ConfigError, match="line 2: split must be"):
        load_measured(path)


def test_the_report_end_to_end(tmp_path, monkeypatch):
    """Two rows of the tiny model on one H100 (made-up measurements: a check of the plumbing, not of the model): the
    report, its CSV and plot are written, and a second run predicts nothing again."""
    from tracer.reports import validation

    path = tmp_path / "measured.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for i, (split, conc) in enumerate((("calibration", "8"), ("held-out", "max"))):
            w.writerow({"id": f"t{i}", "split": split, "model": "tiny", "weights": "preset", "kv_cache": "bfloat16",
                        "engine": "vllm", "engine_version": "0", "system": "h100x1", "strategy": "tp", "isl": "64",
                        "osl": "64", "concurrency": conc, "scenario": "offline", "output_tok_s": "1000",
                        "source": "https://example.org", "source_date": "2026-01-01", "notes": ""})
    out = tmp_path / "report"
    report, head = validation.write_report(str(out), measured=path)
    assert head["held_out_rows"] == 1 and head["calibration_rows"] == 1 and head["not_predicted"] == 0
    assert (out / "validation.png").exists() and "Held-out MAPE per engine" in report.read_text()
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all("ideal_tok_s" in json.loads(x) for x in lines)
    calls = []
    monkeypatch.setattr("tracer.validation.predict", lambda r: calls.append(r))
    validation.write_report(str(out), measured=path)
    assert calls == []
    # a row corrected under its old id (its KV cache dtype) is predicted again, and only it
    text = path.read_text().replace("t1,held-out,tiny,preset,bfloat16", "t1,held-out,tiny,preset,fp8")
    path.write_text(text)
    monkeypatch.setattr("tracer.validation.predict",
                        lambda r: calls.append(r.id) or {"id": r.id, "error": "not run"})
    validation.write_report(str(out), measured=path)
    assert calls == ["t1"]
    assert main(["report", "validation", "--out", str(tmp_path / "x"), "--from", "y"]) == 2


def test_the_digest_leaves_out_the_iteration_table_alone():
    """Kept predictions are re-priced at a new overhead exactly, so the [iteration] table is not in their digest;
    a [moe] table after it is (it was left out too while the digest cut the file at [iteration])."""
    text = '[kernel]\nfloor_s = 3e-6\n\n[iteration]\noverhead_s = 0.004\n\n[moe]\nm = [1]\n'
    assert without_iteration(text) == "[kernel]\nfloor_s = 3e-6\n\n[moe]\nm = [1]\n"
    assert without_iteration(text.replace("0.004", "0.002")) == without_iteration(text)
    assert without_iteration(text.replace("m = [1]", "m = [2]")) != without_iteration(text)
    assert without_iteration("[kernel]\n\n[iteration]\noverhead_s = 0.004\n") == "[kernel]\n"


def test_ctrl_c_keeps_what_was_predicted(tmp_path, monkeypatch):
    """A Ctrl-C after the first of three rows: one line (tracer.errors.Interrupted, exit 130), the finished row kept
    in predictions.jsonl, and a run again predicts only the two left."""
    import tracer.validation as v

    path = tmp_path / "measured.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for i in range(3):
            w.writerow({"id": f"t{i}", "split": "held-out", "model": "tiny", "weights": "preset",
                        "kv_cache": "bfloat16", "engine": "vllm", "engine_version": "0", "system": "h100x1",
                        "strategy": "tp", "isl": "64", "osl": "64", "concurrency": "8", "scenario": "offline",
                        "output_tok_s": "1000", "source": "https://example.org", "source_date": "2026-01-01",
                        "notes": ""})
    calls = []

    def interrupted_after_one(row):
        calls.append(row.id)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return {"id": row.id, "error": "not run"}

    monkeypatch.setattr(v, "predict", interrupted_after_one)
    with pytest.raises(Interrupted, match="^validation stopped by SIGINT: 1 of 3 rows predicted and kept") as err:
        v.predict_all(v.load_measured(path), tmp_path / "out")
    assert err.value.code == 130 and "\n" not in str(err.value)  # the CLI prints it on one line, exits 130
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 1
    calls.clear()
    monkeypatch.setattr(v, "predict", lambda row: calls.append(row.id) or {"id": row.id, "error": "not run"})
    v.predict_all(v.load_measured(path), tmp_path / "out")
    assert sorted(calls) == ["t1", "t2"]
