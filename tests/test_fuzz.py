"""Inputs thrown at the CLI and the API as a careless user would write them (issue 13): every case ends with a sane
result or a one-line error (exit 2), never a traceback, a hang or an accepted model whose parameter count disagrees
with a hand count of its own fields. Bounded (derandomized, a few dozen cases each) to run in CI in well under a
minute; only a valid flag value compiles anything (the tiny model)."""

import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshes.strategies import STRATEGIES, get_strategy, load_strategy
from meshes.systems import SYSTEMS, get_system
from models.files import get_model, load_model_file
from models.presets import PRESETS
from tracer import sweep
from tracer.cli import main
from tracer.errors import ConfigError

FUZZ = settings(max_examples=40, deadline=timedelta(seconds=10), derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Values people get wrong: signs, zeros, huge, not-a-number, wrong types.
NUMBERS = st.one_of(st.integers(-10, 10), st.sampled_from([0, -1, 2**31, 2**63, 10**30]),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=4),
                    st.lists(st.integers(0, 4), max_size=2))
NUMBER_TEXT = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e30", "abc", "", "2147483648", "3.5", "max",
                               "0x10", "²"])


def one_line_or_ok(code: int, err: str):
    assert code in (0, 2), code
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


@FUZZ
@given(flag=st.sampled_from(["--batch", "--context", "--prompt", "--price", "--capacity-factor", "--dtype",
                             "--weights", "--kv-cache", "--system", "--strategy", "--routing", "--fusion",
                             "--compiler"]),
       value=NUMBER_TEXT)
def test_trace_flags(capsys, flag, value):
    """A bad value for one flag is refused before anything compiles; a value that happens to be valid traces the
    tiny model on one GPU (a second or two)."""
    argv = ["trace", "--model", "tiny", "--system", "h100x1", "--context", "64", "--no-max-batch", flag, value]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    one_line_or_ok(code, capsys.readouterr().err)


def hand_count(f: dict) -> int:
    """Parameters of a model from its own fields: embedding, per layer attention (q, k, v, o and their biases),
    two norms and a dense SwiGLU MLP or, past the first dense layers, the routed experts (with biases), the shared
    experts and the router; a final norm and an untied LM head."""
    d, layers, n, k, h = f["hidden"], f["n_layers"], f["n_heads"], f["n_kv_heads"], f["head_dim"]
    attn = 2 * d * n * h + 2 * d * k * h + ((n + 2 * k) * h + d if f["qkv_bias"] else 0)
    total = f["vocab_size"] * d * (1 if f["tie_embeddings"] else 2) + d
    for layer in range(layers):
        if f["n_experts"] and layer >= f["first_dense"]:
            e, fe = f["n_experts"], f["expert_ffn"]
            expert = 3 * d * fe + (2 * fe + d if f["expert_bias"] else 0)
            router = d * e + (e if f["expert_bias"] else 0)
            mlp = e * expert + f["n_shared"] * 3 * d * fe + router
        else:
            mlp = 3 * d * f["ffn"]
        total += attn + mlp + 2 * d
    return total


MODEL_FIELDS = {"vocab_size": 512, "hidden": 128, "n_layers": 4, "n_heads": 8, "n_kv_heads": 8, "head_dim": 32,
                "ffn": 256, "n_experts": 0, "n_active": 0, "n_shared": 0, "expert_ffn": 0, "first_dense": 0,
                "tie_embeddings": False, "qkv_bias": False, "expert_bias": False}


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(sorted(MODEL_FIELDS)), NUMBERS, max_size=4),
       moe=st.booleans())
def test_model_files(tmp_path_factory, changes, moe):
    fields = {**MODEL_FIELDS, **({"n_experts": 8, "n_active": 2, "expert_ffn": 64, "first_dense": 2} if moe else {}),
              **changes}
    path = tmp_path_factory.mktemp("m") / "m.toml"
    path.write_text("\n".join(f"{k} = {json.dumps(v) if not isinstance(v, float) else _toml_float(v)}"
                              for k, v in fields.items()) + "\n")
    try:
        cfg = load_model_file(str(path))
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    assert cfg.total_params == hand_count({k: getattr(cfg, k) for k in MODEL_FIELDS})


def _toml_float(v: float) -> str:
    return "nan" if v != v else ("inf" if v > 0 else "-inf") if v in (float("inf"), float("-inf")) else repr(v)


SIZES = st.one_of(st.integers(-2, 80), st.sampled_from(["domain", "rest", "domain/3", "domain/8", "domain/x", "", "8"]),
                  st.booleans(), st.lists(st.integers(1, 4), max_size=2))
RULES = st.one_of(st.sampled_from(["a", "b", "c", "tp"]), st.lists(st.sampled_from(["a", "b", "x"]), max_size=3),
                  st.integers(), st.booleans())


@FUZZ
@given(mesh=st.dictionaries(st.sampled_from(["a", "b", "c"]), SIZES, max_size=3),
       rules=st.dictionaries(st.sampled_from(["batch", "heads", "kv_heads", "mlp", "experts", "vocab", "bogus"]),
                             RULES, max_size=3))
def test_strategy_files(tmp_path_factory, mesh, rules):
    path = tmp_path_factory.mktemp("s") / "s.toml"
    path.write_text("[mesh]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in mesh.items())
                    + "[rules]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in rules.items()))
    try:
        shape = load_strategy(str(path)).mesh_shape(get_system("h100x8"))
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    product = 1
    for size in shape.values():
        product *= size
    assert product == 8


@FUZZ
@given(axes=st.dictionaries(st.sampled_from(["models", "systems", "strategies", "batches", "contexts", "prompts"]),
                            st.lists(st.one_of(st.sampled_from(["tiny", "h100x8", "tp", "max"]), NUMBERS,
                                               st.dictionaries(st.text(max_size=2), st.integers(), max_size=1)),
                                     max_size=3),
                            max_size=6))
def test_sweep_files(tmp_path_factory, axes):
    path = tmp_path_factory.mktemp("w") / "w.toml"
    lines = []
    for key, values in axes.items():
        items = []
        for v in values:
            if isinstance(v, dict):
                items.append("{" + ", ".join(f"{json.dumps(a)} = {b}" for a, b in v.items()) + "}")
            elif isinstance(v, float):
                items.append(_toml_float(v))
            else:
                items.append(json.dumps(v))
        lines.append(f"{key} = [{', '.join(items)}]")
    path.write_text("\n".join(lines) + "\n")
    try:
        points = sweep.grid(**sweep.load_sweep(str(path)))
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    for p in points:
        assert isinstance(p.model, str) and (p.batch == "max" or (type(p.batch) is int and p.batch > 0))
        assert type(p.context) is int and p.context > 0


@FUZZ
@given(name=st.one_of(st.text(max_size=12), st.sampled_from([*SYSTEMS, *STRATEGIES, *PRESETS, "h100x8*2",
                                                               "h100x8*", "x.toml", "a/config.json"]),
                      NUMBERS, st.none()))
def test_api_names(name):
    for get in (get_system, get_strategy, get_model):
        try:
            get(name)
        except ConfigError as err:
            assert "\n" not in str(err)


@pytest.mark.parametrize("argv", [["models", "--model", "nowhere.toml"], ["systems", "--bogus"], ["report"],
                                  ["sweep", "--jobs", "0", "--models", "tiny", "--systems", "h100x8",
                                   "--strategies", "tp", "--batches", "8", "--contexts", "64"]])
def test_commands_with_missing_or_bad_arguments(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    one_line_or_ok(code, capsys.readouterr().err)
    assert code == 2
