"""DeepSpeed ZeRO-2 and ZeRO-3 (configs/deepspeed/*.json) through train_sft: 2 CPU processes on gloo.

Needs deepspeed, which the default CPU environment does not install: `make test-deepspeed` builds .venv-ds
(DS_BUILD_OPS=0, the CPU torch pin) and runs this file there. The CPU accelerator falls back to the gloo
backend without oneccl; its shared-memory comm op is compiled once (about 90 s on 2 cores) and cached.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("deepspeed") is None:
    pytest.skip(
        "deepspeed is not installed here; `make test-deepspeed` runs these tests in .venv-ds", allow_module_level=True
    )

import torch  # noqa: E402
from test_train import SFT, TINY, sft_row  # noqa: E402

from tracemill import tiny  # noqa: E402
from tracemill.train import SFTParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
# 96 rows, 16 held out: 80 training rows fill every optimizer step of 8 (4 per process x 2 processes), so the
# distributed run sees exactly the micro-batches a single process accumulates (a short last step would be
# padded with repeated rows on the second process).
PARAMS = dataclasses.replace(SFT, heldout_fraction=1 / 6, logging_steps=1)

LAUNCHED = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from tracemill.train import LossCurve, SFTParams, train_sft

model, rows_file, out_dir, params_json, result = sys.argv[1:]
curve = LossCurve()
metrics = train_sft(model, json.loads(Path(rows_file).read_text()), out_dir, SFTParams(**json.loads(params_json)),
                    callbacks=[curve])
if dist.get_rank() == 0:
    Path(result).write_text(json.dumps({"metrics": metrics, "curve": curve.rows, "backend": dist.get_backend(),
                                        "world_size": dist.get_world_size()}))
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    rng = random.Random(0)
    return [sft_row(i, rng) for i in range(96)]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    tokenizer = tiny.make_tokenizer(
        [r["prompt"] + "".join(s["text"] for s in r["segments"]) for r in rows], TINY.vocab_size
    )
    return tiny.save(tiny.make_model(tokenizer, TINY), tokenizer, tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def shm_op() -> None:
    """DeepSpeed's CPU comm backend loads its shared-memory op at init: compile it here, once, so the first
    training run does not pay for it (ninja finds it in ~/.cache/torch_extensions afterwards)."""
    from deepspeed.accelerator import get_accelerator

    assert get_accelerator().communication_backend_name() == "gloo"  # no oneccl: gloo
    get_accelerator().create_op_builder("ShareMemCommBuilder").load()


@pytest.fixture(scope="module")
def single(base_model: Path, rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run in this process, without DeepSpeed: the reference for the final weights."""
    from tracemill.train import train_sft

    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and two spin-wait when a core is busy
    try:
        metrics = train_sft(base_model, rows, out, PARAMS)
    finally:
        torch.set_num_threads(threads)
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


# train_sft with `processes: 1` in a plain process, as a stage runs it: no launcher and no group beforehand.
ALONE = """
import json, os, sys
from pathlib import Path
import torch.distributed as dist
from tracemill.train import SFTParams, train_sft
from tracemill.train.launch import LAUNCHER_VARIABLES

model, rows_file, out_dir, params_json, result = sys.argv[1:]
metrics = train_sft(model, json.loads(Path(rows_file).read_text()), out_dir, SFTParams(**json.loads(params_json)))
Path(result).write_text(json.dumps({"metrics": metrics, "group_left": not dist.is_initialized(),
                                    "variables_left": [k for k in LAUNCHER_VARIABLES if k in os.environ]}))
"""
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD))


def launch(
    base_model: Path,
    rows: list[dict[str, Any]],
    params: SFTParams,
    tmp_path: Path,
    script: str = LAUNCHED,
    launcher: tuple[str, ...] = TORCHRUN,
) -> dict[str, Any]:
    from tracemill.train.launch import LAUNCHER_VARIABLES

    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "launched.py").write_text(script)
    outside = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    proc = subprocess.run(
        [
            sys.executable,
            *launcher,
            str(tmp_path / "launched.py"),
            str(base_model),
            str(tmp_path / "rows.json"),
            str(tmp_path / "out"),
            json.dumps(dataclasses.asdict(params)),
            str(tmp_path / "result.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=outside | {"PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads((tmp_path / "result.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_sft_on_two_cpu_processes_matches_a_single_process(
    stage: int, shm_op: None, base_model: Path, rows: list[dict[str, Any]], single: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    params = dataclasses.replace(PARAMS, deepspeed=str(ROOT / "configs" / "deepspeed" / f"zero{stage}.json"))
    result = launch(base_model, rows, params, tmp_path)
    metrics, curve = result["metrics"], result["curve"]
    assert (result["backend"], result["world_size"]) == ("gloo", WORLD)
    steps = 2 * 80 // PARAMS.batch_size  # 2 epochs of 80 rows, 8 per optimizer step across both processes
    assert metrics["examples"] == 80 and metrics["global_step"] == len(curve) == steps
    assert curve[-1]["loss"] < 0.8 * curve[0]["loss"]
    assert metrics["heldout_loss"] < 0.8 * metrics["heldout_loss_initial"]

    out = tmp_path / "out"
    assert not (out / "checkpoints").exists()
    weights, base, reference = (load_file(p / "model.safetensors") for p in (out, base_model, single))
    # Full tensors, not ZeRO-3 shards; no untied copy of the tied lm_head (ZeRO-2 hands save_model clones).
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in base.items()}
    assert any(not torch.equal(weights[k], base[k]) for k in base)
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5, msg=name)  # measured: 1.2e-7

    reference_metrics = json.loads((single / "metrics.json").read_text())
    assert metrics["train_loss"] == pytest.approx(reference_metrics["train_loss"], rel=1e-4)
    assert metrics["heldout_loss_initial"] == pytest.approx(reference_metrics["heldout_loss_initial"], rel=1e-5)
    assert metrics["heldout_loss"] == pytest.approx(reference_metrics["heldout_loss"], rel=1e-4)

    ids = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
        expected = AutoModelForCausalLM.from_pretrained(single).eval()(ids).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_zero3_with_one_process_forms_its_own_group_and_leaves_it(
    shm_op: None, base_model: Path, rows: list[dict[str, Any]], single: Path, tmp_path: Path
) -> None:
    """`processes: 1` with DeepSpeed (params.gpu.yaml on a 1-GPU node) outside any launcher: train_sft makes
    its process rank 0 of a group of one, trains to the weights of the run without DeepSpeed, and leaves
    the group and its variables behind so the stage goes on as a plain process."""
    from safetensors.torch import load_file

    params = dataclasses.replace(PARAMS, deepspeed=str(ROOT / "configs" / "deepspeed" / "zero3.json"))
    result = launch(base_model, rows, params, tmp_path, script=ALONE, launcher=())
    assert result["group_left"] and result["variables_left"] == []
    assert result["metrics"]["global_step"] == 2 * 80 // PARAMS.batch_size
    weights, reference = load_file(tmp_path / "out" / "model.safetensors"), load_file(single / "model.safetensors")
    assert weights.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
