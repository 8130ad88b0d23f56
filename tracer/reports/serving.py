"""`tracer serving`'s table: a workload's steady state (tracer.serving.Serving)."""


def serving_text(s) -> str:
    rows = [
        ("workload", f"{s.isl} tokens in, {s.osl} out; {s.concurrency} sequences running ({s.concurrency_note})"),
        ("system", f"{s.system}, {s.strategy}: {s.chips} chip{'s' if s.chips != 1 else ''}, ${s.usd_per_hour:.2f}/h"),
        ("KV pool", f"{s.kv_pool_bytes_per_device / 1e9:.1f} GB per device ({s.kv_fraction:g} of HBM less weights), "
                    f"{s.kv_bytes_per_sequence_per_device / 1e6:.1f} MB a sequence at its mean context"),
        ("iteration", f"{s.iteration_s * 1e3:.2f} ms (decode alone {s.decode_s * 1e3:.2f} ms, prefill of "
                      f"{s.prefill_tokens_per_iteration:.0f} prompt tokens alone {s.prefill_s * 1e3:.2f} ms); output "
                      f"tokens pay {s.output_share_s * 1e3:.2f} ms of it"),
        *([("speculative", f"{s.speculative} drafted a step by {s.draft} at acceptance {s.acceptance:g}: "
                            f"{s.tokens_per_step:.2f} tokens a sequence an iteration; the draft takes "
                            f"{s.draft_s * 1e3:.2f} ms of it")] if s.speculative else []),
        _latencies(s),
        ("output tokens/s", f"{s.output_tokens_per_s:,.0f} ({s.output_tokens_per_s_per_chip:,.0f} per chip, "
                            f"{1 / s.tpot_s:.1f} per user)"),
        ("input, total tokens/s", f"{s.input_tokens_per_s:,.0f}, {s.total_tokens_per_s:,.0f}"),
        ("requests/s", f"{s.requests_per_s:.2f}"),
        ("USD per M tokens", f"input ${s.usd_per_mtok_input:.3f}, output ${s.usd_per_mtok_output:.3f}, blended "
                             f"${s.usd_per_mtok_blended:.3f} (output/input "
                             f"{s.usd_per_mtok_output / s.usd_per_mtok_input:.1f}x)"),
    ]
    return _table(f"{s.model} serving", rows, s.compiled, s.notes)


def _table(title: str, rows: list, compiled, notes) -> str:
    """A title, its rows (label, text) aligned, then what was compiled and the notes."""
    width = max(len(k) for k, _ in rows)
    lines = [title, *(f"  {k:<{width}}  {v}" for k, v in rows)]
    return "\n".join(lines + [f"  compiled: {c}" for c in compiled] + [f"  note: {n}" for n in notes])


def _latencies(x) -> tuple[str, str]:
    return "TTFT / TPOT / end to end", f"{x.ttft_s * 1e3:.0f} ms / {x.tpot_s * 1e3:.2f} ms / {x.e2e_s:.2f} s"


def disagg_text(r) -> str:
    """`tracer serving --disagg`'s table (tracer.disagg.Disaggregated)."""
    d = r.decode
    rows = [
        ("workload", f"{r.isl} tokens in, {r.osl} out"),
        ("instances", f"{r.prefill_instances} prefill + {r.decode_instances} decode of {r.system}, {r.strategy} "
                      f"({r.split_note}): {r.chips} chips, ${r.usd_per_hour:.2f}/h"),
        ("prefill instance", f"{r.prompts_per_iteration:.3g} prompt{'' if r.prompts_per_iteration == 1 else 's'} "
                             f"per replica an iteration of "
                             f"{r.prefill_iteration_s * 1e3:.2f} ms: {r.prefill_requests_per_s:,.1f} requests/s at "
                             f"most; busy {r.prefill_utilization:.0%}"),
        ("KV transfer", f"{r.kv_bytes_per_request / 1e6:.1f} MB a request over {r.kv_link}, "
                        f"{r.kv_transfer_s * 1e3:.2f} ms"),
        ("decode instance", f"{d.concurrency} sequences ({d.concurrency_note}), iteration {d.iteration_s * 1e3:.2f} "
                            f"ms: {d.requests_per_s:,.1f} requests/s at most; busy {r.decode_utilization:.0%}"),
        _latencies(r),
        ("output tokens/s", f"{r.output_tokens_per_s:,.0f} ({r.output_tokens_per_s_per_chip:,.0f} per chip; an "
                            f"instance serving it whole at the same targets: "
                            f"{r.aggregated_output_tokens_per_s_per_chip:,.0f} per chip)"),
        ("requests/s", f"{r.requests_per_s:.2f}"),
        ("USD per M tokens", f"input ${r.usd_per_mtok_input:.3f} (the prefill instances' chip-time), output "
                             f"${r.usd_per_mtok_output:.3f} (the decode instances'), blended "
                             f"${r.usd_per_mtok_blended:.3f}"),
    ]
    return _table(f"{r.model} serving, disaggregated", rows, d.compiled, r.notes)
