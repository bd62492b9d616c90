"""SFT with loss masks and the PPM, on tiny real Qwen2 models built by tracemill.tiny."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tracemill import params as params_mod
from tracemill import tiny
from tracemill.formats import render_prompt
from tracemill.records import content_id, segment, validate
from tracemill.train import IGNORE_INDEX, PPMParams, SFTParams, TrainError, TrainParams, build_labels

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny.TinyConfig(
    vocab_size=400,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
# Small enough to train in seconds, large enough for the loss to move.
SFT = SFTParams(
    learning_rate=3e-3,
    batch_size=8,
    micro_batch_size=4,
    epochs=2.0,
    max_length=192,
    warmup_ratio=0.0,
    heldout_fraction=0.15,
    save_steps=1000,
    logging_steps=1000,
)


def sft_row(i: int, rng: random.Random) -> dict[str, Any]:
    a, b = rng.randint(0, 60), rng.randint(0, 60)
    segments = [
        segment("model", f"{a} + {b} = {a + b}."),
        segment("hint", " Wait, let me check with code."),
        segment("code", f"\n```python\nprint({a} + {b})\n```"),
        segment("output", f"\n```output\n{a + b}\n```\n"),
        segment("model", f"So the answer is \\boxed{{{a + b}}}."),
    ]
    return {
        "example_id": content_id("sft", i),
        "source": "test",
        "problem_id": None,
        "prompt": f"What is {a} plus {b}?",
        "segments": segments,
        "metadata": None,
    }


def pair_row(i: int, rng: random.Random) -> dict[str, Any]:
    a, b = rng.randint(0, 60), rng.randint(0, 60)
    good, bad = rng.choice([(" check: yes", " check: no"), (" looks right.", " looks wrong.")])
    return {
        "pair_id": content_id("pair", i),
        "problem_id": content_id("p", i),
        "tree_id": content_id("t", i),
        "round": 1,
        "prefix": f"What is {a} plus {b}? Step 1: add them.",
        "chosen": good,
        "rejected": bad,
        "chosen_q": 1.0,
        "rejected_q": -1.0,
        "final_step": False,
        "metadata": None,
    }


@pytest.fixture(scope="session")
def rows() -> list[dict[str, Any]]:
    rng = random.Random(0)
    out = [sft_row(i, rng) for i in range(96)]
    validate("sft", out)  # the fixture rows are real `sft` rows
    return out


@pytest.fixture(scope="session")
def pairs() -> list[dict[str, Any]]:
    rng = random.Random(1)
    out = [pair_row(i, rng) for i in range(96)]
    validate("pairs", out)
    return out


@pytest.fixture(scope="session")
def base_model(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], pairs: list[dict[str, Any]]
) -> Path:
    texts = [r["prompt"] + "".join(s["text"] for s in r["segments"]) for r in rows]
    texts += [p["prefix"] + p["chosen"] + p["rejected"] for p in pairs]
    tokenizer = tiny.make_tokenizer(texts, TINY.vocab_size)
    return tiny.save(tiny.make_model(tokenizer, TINY), tokenizer, tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="session")
def tokenizer(base_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model)


def test_labels_train_on_model_and_code_text_only(tokenizer: Any, rows: list[dict[str, Any]]) -> None:
    row = rows[0]
    input_ids, labels = build_labels(tokenizer, row["prompt"], row["segments"])
    assert len(input_ids) == len(labels)
    trained = tokenizer.decode([t for t, lab in zip(input_ids, labels) if lab != IGNORE_INDEX])
    expected = "".join(s["text"] for s in row["segments"] if s["loss"]) + tiny.IM_END + "\n"
    assert trained == expected
    assert all(lab in (IGNORE_INDEX, tok) for tok, lab in zip(input_ids, labels))
    prompt_len = len(tokenizer(render_prompt(row["prompt"], tokenizer), add_special_tokens=False)["input_ids"])
    assert set(labels[:prompt_len]) == {IGNORE_INDEX}


@pytest.mark.parametrize(
    ("labelled_only", "chunk_tokens"),
    [(True, 0), (True, 7), (False, 0)],
    ids=["head-on-labelled-positions", "chunked-head", "model-loss"],
)
def test_masked_tokens_change_neither_loss_nor_gradient(
    base_model: Path, tokenizer: Any, rows: list[dict[str, Any]], tmp_path: Path, labelled_only: bool, chunk_tokens: int
) -> None:
    """The Trainer's loss over two accumulated micro-batches equals the mean over unmasked tokens only, and
    its gradient equals that of a loss whose masked labels were set to arbitrary tokens and then excluded.
    The reference passes an explicit attention mask, so the mask-free collator is checked too. train_sft's
    LabelledTrainer gives the same loss and gradient while its LM head sees only the labelled positions,
    in one piece or in chunks of 7 (loss_chunk_tokens)."""
    from transformers import AutoModelForCausalLM

    from tracemill.train.hf import BucketTrainer, causal_lm_collator, training_args
    from tracemill.train.sft import LabelledTrainer

    collate = causal_lm_collator(tokenizer.pad_token_id)
    features = [
        dict(zip(("input_ids", "labels"), build_labels(tokenizer, r["prompt"], r["segments"]))) for r in rows[:6]
    ]
    micro = [collate(features[:3]), collate(features[3:])]
    n_loss_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro)

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    args = training_args(SFT, tmp_path / "ckpt")
    if labelled_only:
        trainer = LabelledTrainer(model=model, args=args, lengths=[], bucket_window=1, loss_chunk_tokens=chunk_tokens)
    else:
        trainer = BucketTrainer(model=model, args=args, lengths=[], bucket_window=1)
    head_rows: list[int] = []
    hook = model.lm_head.register_forward_hook(
        lambda _m, args, _out: head_rows.append(args[0].numel() // TINY.hidden_size)
    )
    model.zero_grad()
    loss = sum(trainer.compute_loss(model, {**b}, num_items_in_batch=n_loss_tokens) for b in micro)
    loss.backward()
    hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    all_positions = sum(b["input_ids"].numel() for b in micro)
    assert sum(head_rows) == (n_loss_tokens if labelled_only else all_positions)
    assert n_loss_tokens < 0.8 * all_positions

    model.zero_grad()
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(())
    for b, group in zip(micro, (features[:3], features[3:])):
        lengths = torch.tensor([len(f["input_ids"]) for f in group])
        assert lengths.min() < lengths.max()  # the micro-batch holds padding
        real = (torch.arange(b["input_ids"].shape[1]) < lengths[:, None]).long()
        logits = model(input_ids=b["input_ids"], attention_mask=real).logits[:, :-1]
        target, keep = b["labels"][:, 1:], b["labels"][:, 1:] != IGNORE_INDEX
        junk = torch.randint(0, logits.shape[-1], target.shape, generator=gen)
        target = torch.where(keep, target, junk)  # masked labels set to anything
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        total = total + (per_token * keep).sum()
    reference = total / n_loss_tokens
    reference.backward()

    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("chunk_tokens", [0, 1, 7, 100_000])
def test_chunked_linear_cross_entropy_equals_the_plain_head_without_keeping_logits(
    base_model: Path, tokenizer: Any, rows: list[dict[str, Any]], chunk_tokens: int
) -> None:
    """train/loss.py on a tiny Qwen2: the summed loss and every parameter's gradient equal those of the plain
    lm_head + cross-entropy over the same positions, IGNORE_INDEX labels (prompt, hint, output, padding)
    included. Chunked, nothing but its inputs is kept for the backward pass (the chunks' logits are
    recomputed there); unchunked (0), the fp32 logits of every position are."""
    from transformers import AutoModelForCausalLM

    from tracemill.train.hf import causal_lm_collator
    from tracemill.train.loss import linear_cross_entropy

    features = [
        dict(zip(("input_ids", "labels"), build_labels(tokenizer, r["prompt"], r["segments"]))) for r in rows[:4]
    ]
    batch = causal_lm_collator(tokenizer.pad_token_id)(features)
    targets = batch["labels"][:, 1:].reshape(-1)
    assert 0 < int((targets == IGNORE_INDEX).sum()) < targets.numel()
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    vocab = model.config.vocab_size

    logits = model(input_ids=batch["input_ids"]).logits[:, :-1].reshape(-1, vocab)
    plain = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    plain.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    hidden = model.model(input_ids=batch["input_ids"]).last_hidden_state[:, :-1].reshape(-1, TINY.hidden_size)
    weight = model.lm_head.weight
    kept: dict[int, int] = {}  # storage -> bytes, of every tensor autograd saves for the backward pass

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked = linear_cross_entropy(hidden, weight, targets, chunk_tokens)
    chunked.backward()

    assert chunked.dtype == torch.float32
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(
            param.grad, expected[name], rtol=1e-4, atol=1e-5, msg=name
        )  # fp32 sums, another order
    inputs = {t.untyped_storage().data_ptr() for t in (hidden, weight, targets)}
    beyond_inputs = sum(n for ptr, n in kept.items() if ptr not in inputs)
    full_logits = targets.numel() * vocab * 4
    assert beyond_inputs >= full_logits if chunk_tokens == 0 else beyond_inputs == 0


def test_sft_lowers_heldout_loss_and_saves_a_loadable_model(
    base_model: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from tracemill.train import train_sft

    metrics = train_sft(base_model, rows, tmp_path / "sft", SFT)
    assert metrics["heldout_examples"] > 0 and metrics["dropped_too_long"] == 0
    assert metrics["heldout_loss"] < 0.8 * metrics["heldout_loss_initial"]
    assert not (tmp_path / "sft" / "checkpoints").exists()
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "sft").config.model_type == "qwen2"


RESUME = dataclasses.replace(SFT, epochs=2.0, save_steps=3, heldout_fraction=0.0)

KILLED_RUN = """
import json, sys, time
from pathlib import Path
from transformers import TrainerCallback
from tracemill.train import SFTParams, train_sft

model, rows_file, out_dir, params_json, marker = sys.argv[1:]

class StallAfterFirstCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        Path(marker).write_text(str(state.global_step))
        time.sleep(600)  # the test SIGKILLs the process here, mid-epoch

train_sft(model, json.loads(Path(rows_file).read_text()), out_dir, SFTParams(**json.loads(params_json)),
          callbacks=[StallAfterFirstCheckpoint()])
"""


def test_sft_killed_mid_epoch_resumes_from_its_checkpoint(
    base_model: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from tracemill.train import train_sft

    rows_file, marker, out = tmp_path / "rows.json", tmp_path / "saved", tmp_path / "killed"
    rows_file.write_text(json.dumps(rows))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_RUN,
            str(base_model),
            str(rows_file),
            str(out),
            json.dumps(dataclasses.asdict(RESUME)),
            str(marker),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the training subprocess never wrote a checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert int(marker.read_text()) == RESUME.save_steps
    assert not (out / "model.safetensors").exists()

    resumed = train_sft(base_model, rows, out, RESUME)
    straight = train_sft(base_model, rows, tmp_path / "straight", RESUME)
    steps_per_epoch = len(rows) // RESUME.batch_size
    assert resumed["resumed_from_step"] == RESUME.save_steps < steps_per_epoch
    assert resumed["global_step"] == straight["global_step"] == 2 * steps_per_epoch
    weights, reference = load_file(out / "model.safetensors"), load_file(tmp_path / "straight" / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, msg=name)


class Interrupted(Exception):
    """Ends a run right after its first checkpoint, leaving the checkpoint behind as a crash would."""


def test_resume_skips_checkpoints_of_a_different_run(
    base_model: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    from transformers import TrainerCallback

    from tracemill.train import train_sft

    class InterruptAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_sft(base_model, rows[:48], tmp_path / "run", RESUME, callbacks=[InterruptAfterFirstCheckpoint()])
    assert (tmp_path / "run" / "checkpoints" / f"checkpoint-{RESUME.save_steps}").is_dir()
    other = train_sft(base_model, rows[:48], tmp_path / "run", dataclasses.replace(RESUME, learning_rate=1e-3))
    assert other["resumed_from_step"] == 0


def test_ppm_ranks_held_out_pairs_above_chance(base_model: Path, pairs: list[dict[str, Any]], tmp_path: Path) -> None:
    from tracemill.train import load_ppm, train_ppm

    params = PPMParams(
        learning_rate=3e-3,
        batch_size=8,
        micro_batch_size=8,
        epochs=2.0,
        max_length=128,
        warmup_ratio=0.0,
        heldout_fraction=0.25,
        save_steps=1000,
        logging_steps=1000,
    )
    metrics = train_ppm(base_model, pairs, tmp_path / "ppm", params)
    assert metrics["heldout_pairs"] == 24
    assert metrics["heldout_pairwise_accuracy"] >= 0.8
    scorer = load_ppm(tmp_path / "ppm")
    pair = pairs[0]
    scores = scorer.score(pair["prefix"], [pair["chosen"], pair["rejected"], " something else"])
    assert len(scores) == 3 and all(-1.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[1]
    assert scorer.score(pair["prefix"], []) == []

    from safetensors.torch import load_file

    again = train_ppm(base_model, pairs, tmp_path / "again", params)  # same params and seed: the same PPM
    assert again["heldout_pairwise_accuracy"] == metrics["heldout_pairwise_accuracy"]
    first, second = (
        load_file(tmp_path / "ppm" / "model.safetensors"),
        load_file(tmp_path / "again" / "model.safetensors"),
    )
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_ppm_loss_weighs_each_pair_by_how_many_its_prefix_paired(
    base_model: Path, pairs: list[dict[str, Any]], tokenizer: Any
) -> None:
    """pair_weighting count (the reference's train/rm.py): a prefix with 2 chosen x 2 rejected steps gives
    each of its pairs 1/4, one chosen against 4 rejected 1/4 too, a lone pair (or one without counts) 1."""
    from transformers import AutoModelForSequenceClassification

    from tracemill.train.ppm import PPMTrainer, pair_collator, pair_features, raw_scores

    counts = [(2, 2), (1, 4), (1, 1), None]
    rows = [
        dict(p, metadata=json.dumps({"kind": "sibling", "pos_count": c[0], "neg_count": c[1]}) if c else None)
        for p, c in zip(pairs, counts)
    ]
    features, _ = pair_features(tokenizer, rows, 128, "count")
    assert [f["weight"] for f in features] == [0.25, 0.25, 1.0, 1.0]
    assert [f["weight"] for f in pair_features(tokenizer, rows, 128, "uniform")[0]] == [1.0] * 4

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    batch = pair_collator(tokenizer.pad_token_id)(features)
    with torch.no_grad():
        loss = PPMTrainer.compute_loss(None, model, batch)  # self is unused: the loss is the batch's alone
        chosen, rejected = raw_scores(model, batch["input_ids"]).chunk(2)
    per_pair = -torch.nn.functional.logsigmoid(chosen - rejected)
    assert float(loss) == pytest.approx(float((per_pair * torch.tensor([0.25, 0.25, 1.0, 1.0])).mean()), rel=1e-5)
    assert float(loss) != pytest.approx(float(per_pair.mean()), rel=1e-3)  # the random head scores pairs apart


# 96 rows, 16 held out: 80 training rows fill every optimizer step of 8 (4 per process x 2 processes), so two
# data-parallel ranks see exactly the micro-batches one process accumulates.
PARALLEL = dataclasses.replace(SFT, heldout_fraction=1 / 6, logging_steps=1)


@pytest.mark.slow
def test_sft_in_two_processes_matches_one_process(base_model: Path, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    """processes: 2 trains data-parallel in two spawned gloo ranks; the stage's process gets one folder, the
    metrics and the loss curve, and the weights equal those of the same run in one process."""
    from safetensors.torch import load_file

    from tracemill.train import LossCurve, train_sft

    curves = {n: LossCurve() for n in (1, 2)}
    metrics = {
        n: train_sft(
            base_model, rows, tmp_path / f"p{n}", dataclasses.replace(PARALLEL, processes=n), callbacks=[curves[n]]
        )
        for n in (1, 2)
    }
    steps = 2 * 80 // PARALLEL.batch_size
    assert metrics[2]["global_step"] == metrics[1]["global_step"] == len(curves[2].rows) == steps
    assert [r["step"] for r in curves[2].rows] == [r["step"] for r in curves[1].rows]
    assert metrics[2]["train_loss"] == pytest.approx(metrics[1]["train_loss"], rel=1e-4)
    assert metrics[2]["heldout_loss"] == pytest.approx(metrics[1]["heldout_loss"], rel=1e-4)
    assert metrics[2]["heldout_loss"] < 0.8 * metrics[2]["heldout_loss_initial"]
    assert sorted(p.name for p in (tmp_path / "p2").iterdir()) == sorted(p.name for p in (tmp_path / "p1").iterdir())
    two, one = load_file(tmp_path / "p2" / "model.safetensors"), load_file(tmp_path / "p1" / "model.safetensors")
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_ppm_in_two_processes_saves_one_scorable_folder(
    base_model: Path, pairs: list[dict[str, Any]], tmp_path: Path
) -> None:
    from tracemill.train import load_ppm, train_ppm

    params = PPMParams(
        learning_rate=3e-3,
        batch_size=8,
        micro_batch_size=4,
        epochs=2.0,
        max_length=128,
        warmup_ratio=0.0,
        heldout_fraction=0.25,
        save_steps=1000,
        logging_steps=1000,
        processes=2,
    )
    metrics = train_ppm(base_model, pairs, tmp_path / "ppm", params)
    assert metrics["heldout_pairs"] == 24 and metrics["global_step"] == 2 * 72 // 8
    assert metrics["heldout_pairwise_accuracy"] >= 0.8
    pair = pairs[0]
    chosen, rejected = load_ppm(tmp_path / "ppm").score(pair["prefix"], [pair["chosen"], pair["rejected"]])
    assert chosen > rejected


def test_a_failed_training_process_is_one_clear_error(
    base_model: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    import shutil

    from tracemill.train import train_sft

    broken = tmp_path / "broken"
    shutil.copytree(base_model, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TrainError, match=r"training process \d of 2 failed with exit code 1 .*processes to 1"):
        train_sft(broken, rows, tmp_path / "out", dataclasses.replace(PARALLEL, processes=2))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_missing_model_folder_names_the_path_and_the_fix(rows: list[dict[str, Any]], tmp_path: Path) -> None:
    from tracemill.train import load_ppm, train_sft

    with pytest.raises(TrainError, match=r"'.*nowhere' has no config.json — run 'dvc repro bootstrap'"):
        train_sft(tmp_path / "nowhere", rows, tmp_path / "out", SFT)
    with pytest.raises(TrainError, match="not a PPM folder"):
        (tmp_path / "policy").mkdir()
        (tmp_path / "policy" / "config.json").write_text("{}")
        load_ppm(tmp_path / "policy")


def test_params_yaml_train_section_parses_and_checks_ranges() -> None:
    train = params_mod.section(TrainParams, params_mod.load(ROOT / "params.yaml"), "train")
    assert isinstance(train.sft_start, SFTParams) and isinstance(train.rstar_ppm, PPMParams)
    assert train.rstar_policy.prompt_style == "steps"
    with pytest.raises(params_mod.ParamsError, match="train.rstar_ppm.batch_size"):
        params_mod.parse_section(TrainParams, {"rstar_ppm": {"batch_size": 12, "micro_batch_size": 8}}, "train")


STEP_BUFFERS = [3 << 20, 1 << 20, 5 << 20, 512 << 10] * 4  # a training step's mix of activation and gradient buffers
FAULTS_PER_STEP = """
import ctypes, resource, sys
from tracemill.train.launch import retain_freed_memory
if sys.argv[1] == "retain":
    retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
sizes = [int(n) for n in sys.argv[2].split(",")]
def step():
    blocks = [libc.malloc(n) for n in sizes]
    for block, n in zip(blocks, sizes):
        ctypes.memset(block, 1, n)
    for block in blocks:
        libc.free(block)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_training_processes_reuse_freed_memory_instead_of_faulting_it_in_again() -> None:
    """A step that allocates and frees the same mix of large buffers as the last one: by default glibc
    maps them afresh and every page faults again; after retain_freed_memory the heap keeps them."""

    def faults(mode: str) -> float:
        sizes = ",".join(map(str, STEP_BUFFERS))
        out = subprocess.run(
            [sys.executable, "-c", FAULTS_PER_STEP, mode, sizes], capture_output=True, text=True, check=True
        )
        return float(out.stdout)

    pages = sum(STEP_BUFFERS) // 4096
    default, retained = faults("default"), faults("retain")
    if default < pages / 2:
        pytest.skip(f"this libc keeps freed memory by itself ({default:.0f} of {pages} pages faulted per step)")
    assert retained < pages / 100, f"{retained:.0f} of {pages} pages faulted again per step"


@pytest.mark.parametrize(
    ("processes", "gpus", "ranks"), [(0, 0, 1), (0, 1, 1), (0, 8, 8), (1, 8, 1), (2, 0, 2), (3, 8, 3)]
)
def test_processes_zero_is_one_rank_per_visible_gpu_and_one_without(processes: int, gpus: int, ranks: int) -> None:
    from tracemill.train.launch import resolve_processes

    assert resolve_processes(processes, gpus) == ranks


def test_processes_zero_trains_in_the_stage_process_without_cuda() -> None:
    """No CUDA device visible: `processes: 0` parses, passes the batch check and runs the training function
    in this very process (a spawned rank would report another pid), as `processes: 1` does."""
    from tracemill.train.launch import in_processes, visible_gpus

    parsed = params_mod.parse_section(
        TrainParams, {"sft_start": {"processes": 0, "batch_size": 8, "micro_batch_size": 4}}, "train"
    )
    assert parsed.sft_start.processes == 0
    with pytest.raises(params_mod.ParamsError, match="train.rstar_ppm.processes"):
        params_mod.parse_section(TrainParams, {"rstar_ppm": {"processes": -1}}, "train")
    if not torch.cuda.is_available():
        assert visible_gpus("auto") == 0
    assert visible_gpus("cpu") == 0
    assert in_processes(os.getpid, (), parsed.sft_start.processes, "cpu") == os.getpid()
    with pytest.raises(
        params_mod.ParamsError, match=r"'train.rstar_ppm.micro_batch_size' = 8 x 'train.rstar_ppm.processes' = 0"
    ):
        params_mod.parse_section(
            TrainParams, {"rstar_ppm": {"batch_size": 12, "micro_batch_size": 8, "processes": 0}}, "train"
        )
