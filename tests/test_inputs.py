"""Model, strategy, system and numeric inputs are checked where they are read (issue 13): one-line errors naming
the fix, never a traceback or a silently different model."""

import contextlib
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from meshes.strategies import get_strategy, load_strategy
from meshes.systems import get_system
from models.files import get_model, load_model_file
from models.presets import TINY
from tracer.api import trace, trace_choosing_batch
from tracer.cli import main
from tracer.compile import _cpu_devices
from tracer.errors import ConfigError

DATA = Path(__file__).parent / "data"


def one_line_error(match: str, fn, *args, **kw) -> str:
    with pytest.raises(ConfigError, match=match) as err:
        fn(*args, **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("field, value, match", [
    ("n_shared", -3, "n_shared must be an integer >= 0"), ("q_lora_rank", -8, "q_lora_rank must be an integer >= 0"),
    ("n_experts", -4, "n_experts must be an integer >= 0"), ("kv_lora_rank", -16, "kv_lora_rank must be"),
    ("n_active", 2, "need n_experts > 0"), ("v_head_dim", 64, "need kv_lora_rank > 0"),
    ("hidden", True, "hidden must be a positive integer"), ("tie_embeddings", 1, "must be true or false"),
    ("rope_theta", math.inf, "rope_theta must be a finite number > 0"), ("norm_eps", -1e-6, "norm_eps must be"),
])
def test_model_fields_are_range_checked(field, value, match):
    one_line_error(match, dataclasses.replace, TINY, **{field: value})


def test_capacity_factor_is_bounded_by_the_experts():
    """At a factor of E one expert's slots already hold every assignment: inf and 1e30 are errors."""
    moe = dataclasses.replace(TINY, n_experts=8, n_active=2, expert_ffn=64)
    for factor in (math.inf, 1e30, 9.0, 0.0):
        one_line_error("capacity_factor", dataclasses.replace, moe, capacity_factor=factor)
    assert dataclasses.replace(moe, capacity_factor=8.0).capacity_factor == 8.0


def write(tmp_path: Path, name: str, **changes) -> str:
    cfg = {**json.loads((DATA / name / "config.json").read_text()), **changes}
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return str(folder / "config.json")


@pytest.mark.parametrize("name, changes, match", [
    ("mixtral-8x7b", {"num_local_experts": 0}, "num_local_experts must be a positive integer"),
    ("deepseek-v3", {"n_routed_experts": 0}, "n_routed_experts must be a positive integer"),
    ("deepseek-v3", {"kv_lora_rank": 0}, "kv_lora_rank must be a positive integer"),
    ("deepseek-v3", {"n_shared_experts": -1}, "n_shared_experts must be >= 0"),
    ("deepseek-v3", {"scoring_func": "relu"}, "scoring_func 'relu' is not sigmoid or softmax"),
    ("llama3-70b", {"torch_dtype": "int3"}, "torch_dtype 'int3' is not"),
    ("llama3-70b", {"quantization_config": "fp8"}, "quantization_config must be a JSON object"),
])
def test_hf_fields_an_architecture_needs(tmp_path, name, changes, match):
    one_line_error(match, load_model_file, write(tmp_path, name, **changes))


@pytest.mark.parametrize("text, match", [
    ('[mesh]\n[rules]\nbatch = "dp"\n', "non-empty \\[mesh\\]"),
    ('weight_rules = "x"\n[mesh]\ndp = "rest"\n[rules]\nbatch = "dp"\n', "\\[weight_rules\\] table"),
    ('[mesh]\ntp = true\n[rules]\nheads = "tp"\n', "a size is a positive integer"),
    ('[mesh]\ntp = 8\n[rules]\nheads = 7\n', "a rule is a mesh axis's name or a list of them"),
    ('[mesh]\ntp = 8\n[rules]\nheads = ["tp", 1]\n', "a rule is a mesh axis's name"),
])
def test_strategy_files_are_checked(tmp_path, text, match):
    path = tmp_path / "s.toml"
    path.write_text(text)
    one_line_error(match, load_strategy, str(path))


def test_strategy_sizes_must_use_the_system(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[mesh]\ntp = 2\n[rules]\nheads = "tp"\n')  # 2 of 8 chips, no "rest" axis
    one_line_error("holds 2 of the 8 chips", load_strategy(str(path)).mesh_shape, get_system("h100x8"))
    path.write_text('[mesh]\ndp = "rest"\ntp = "domain/3"\n[rules]\nheads = "tp"\n')
    one_line_error("does not divide the 8-chip domain", load_strategy(str(path)).mesh_shape, get_system("h100x8"))
    assert get_strategy("tp-ep").mesh_shape(get_system("gb200-nvl72")) == {"dp": 1, "ep": 9, "tp": 8}


@pytest.mark.parametrize("name, match", [("h100x8*", "node count after"), ("h100x8*²", "node count after"),
                                         ("h100x8*0", "node count after"), ("v5e-8*2", "only multi-GPU nodes"),
                                         ("h100x1*2", "only multi-GPU nodes"), (None, "system must be a name")])
def test_system_names(name, match):
    one_line_error(match, get_system, name)


@pytest.mark.parametrize("price", [math.nan, math.inf, -math.inf, 0.0, "3"])
def test_price_must_be_a_finite_positive_number(price):
    one_line_error("--price must be a finite number > 0", get_system, "h100x8", price)


def test_api_arguments():
    one_line_error("--batch must be a positive integer, got True", trace, "tiny", batch=True)
    one_line_error("--capacity-factor must be a number", trace, "mixtral-8x7b", capacity_factor="x")
    for tpot in (math.nan, 0, -1, math.inf):
        one_line_error("--tpot-ms must be a finite number", trace_choosing_batch, "tiny", "h100x8", "tp", "max", tpot)


def test_emulated_device_count_setting():
    assert _cpu_devices("72") == (72, None)
    for text in ("abc", "0", "5000", "-1", "٣"):
        count, problem = _cpu_devices(text)
        assert count == 256 and "from 1 to 2048" in problem
    one_line_error("more than the 2048 devices", trace, "tiny", system="h100x8*300", batch=8, context=64,
                   find_max_batch=False)


def test_api_types_and_paths():
    assert get_model(DATA / "llama3-70b" / "config.json").n_layers == 80  # a pathlib.Path is a path
    one_line_error("model must be a preset's name or a model file's path", get_model, None)
    one_line_error("strategy must be a name", get_strategy, None)


def test_files_that_would_hang_or_recurse(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    one_line_error("not a regular file", load_model_file, str(fifo))
    deep = tmp_path / "deep" / "config.json"
    deep.parent.mkdir()
    deep.write_text("[" * 100_000 + "]" * 100_000)
    one_line_error("nested too deeply", load_model_file, str(deep))
    toml = tmp_path / "deep.toml"
    toml.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    one_line_error("nested too deeply|not valid TOML", load_model_file, str(toml))


@pytest.mark.parametrize("argv, match", [
    (["trace", "--batch", "max"], "'max' is for `tracer compare` and `tracer sweep`"),
    (["trace", "--price", "-inf"], "--price must be a finite number > 0"),
    (["compare", "--tpot-ms", "-1"], "--tpot-ms must be a finite number"),
    (["sweep", "--models", "tiny", "--systems", "h100x8", "--strategies", "tp", "--contexts", "64"],
     "--batches or `batches = \\[...\\]`"),
    (["--bogus"], "see `tracer --help`"),
])
def test_cli_messages(capsys, argv, match):
    with pytest.raises(SystemExit) if argv[0].startswith("--") or "max" in argv else contextlib.nullcontext():
        code = main(argv)
        assert code == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and len(err.strip().splitlines()) == 1


def test_closed_or_full_stdout():
    """`tracer models | head -1` ends quietly; `> /dev/full` says so in one line."""
    run = [sys.executable, "-m", "tracer.cli", "models"]
    piped = subprocess.run(f"{' '.join(run)} | head -1", shell=True, capture_output=True, text=True, timeout=120)
    assert piped.stdout.startswith("name") and "Traceback" not in piped.stderr and "Exception" not in piped.stderr
    with open("/dev/full", "w") as full:
        done = subprocess.run(run, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(
        "tracer: error: cannot write the output") and "Traceback" not in done.stderr


def test_sizes_beyond_32_bit_positions_and_batch_with_tpot(capsys):
    one_line_error("must each stay under 2\\^31", trace, "tiny", batch=2**16, prompt=2**16, context=2**16)
    one_line_error("must each stay under 2\\^31", trace, "tiny", batch=1, prompt=8, context=2**31)
    assert main(["compare", "--model", "tiny", "--batch", "8", "--tpot-ms", "5"]) == 2
    assert "--tpot-ms chooses the batch itself" in capsys.readouterr().err


def test_a_long_compile_says_so(monkeypatch, capsys):
    import time

    import tracer.compile

    monkeypatch.setattr(tracer.compile, "PROGRESS_AFTER_S", 0.05)
    with tracer.compile._still_compiling("the prefill step of tiny"):
        time.sleep(0.3)
    assert "still compiling the prefill step of tiny" in capsys.readouterr().err
