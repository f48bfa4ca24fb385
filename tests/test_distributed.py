"""Data-parallel training (tfmlib.distributed, tfmlib.train_gpt): 2 processes under torchrun (gloo, CPU)
end with the weights of one process trained on the concatenated batch; k micro-batches equal one batch
k times larger with the loss averaged per token; a run resumes exactly."""
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from tfmlib import GPT, GPTConfig
from tfmlib.distributed import DistEnv, shard_batch, torchrun, train_step
from tfmlib.losses import LMLoss
from tfmlib.train_gpt import main

TINY = ["--preset", "tiny", "--data", "zen", "--block", "16", "--batch", "8", "--lr", "3e-3",
        "--no-progress", "--log-every", "1"]


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_torchrun_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    steps = ["--steps", "3"]
    done = torchrun(["-m", "tfmlib.train_gpt", *TINY, *steps, "--device", "cpu", "--out", str(tmp_path / "ddp"),
                     "--check-replicas"], nproc_per_node=2, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "the 2 processes' weights: max |difference| = 0.0" in done.stdout   # the replicas never drift
    assert "2 process(es) on cpu (gloo)" in done.stdout and done.stdout.count("tokens/s") == 1  # rank 0 logs
    one = main([*TINY, *steps, "--device", "cpu", "--out", str(tmp_path / "one")])
    assert one["world_size"] == 1
    ddp, single = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    torch.manual_seed(0)
    vocab = next(v.shape[0] for k, v in single.items() if k.endswith(("tok_embed.weight", "lm_head.weight")))
    init = GPT(GPTConfig.preset("tiny", vocab_size=vocab, max_len=16, dropout=0.0)).state_dict()
    assert _max_diff(single, {k: init[k] for k in single}) > 1e-3      # training moved the weights
    print("largest difference, 2 processes vs 1:", _max_diff(ddp, single))
    assert _max_diff(ddp, single) <= 1e-5


def _uneven_batch(seed=0, rows=8, T=12, V=20):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (rows, T), generator=gen)
    y = torch.randint(0, V, (rows, T), generator=gen)
    y[:2, 3:] = -100                          # the first micro-batch has far fewer targets than the others
    return x, y


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny", vocab_size=20, max_len=12, dropout=0.0))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("k", [2, 4])
def test_gradient_accumulation_equals_the_big_batch_per_token(k):
    batch = _uneven_batch()
    big, accumulated = _model(), _model()
    for model, parts in ((big, 1), (accumulated, k)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)   # SGD: weights move by the gradient itself
        for _ in range(2):
            train_step(model, optimizer, shard_batch(batch, DistEnv(), parts), LMLoss(), grad_clip=1.0)
    assert _max_diff(_state(big), _state(accumulated)) <= 1e-6

    # the tempting mistake, mean over each micro-batch then mean of the means, weighs tokens unevenly
    wrong = _model()
    optimizer = torch.optim.SGD(wrong.parameters(), lr=0.5)
    for _ in range(2):
        for micro in shard_batch(batch, DistEnv(), k):
            (LMLoss()(wrong, micro) / k).backward()
        torch.nn.utils.clip_grad_norm_(wrong.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    assert _max_diff(_state(big), _state(wrong)) > 1e-4


def test_train_step_returns_the_per_token_loss_of_the_step():
    batch = _uneven_batch()
    model = _model()
    total, count = LMLoss().totals(model, batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_step(model, optimizer, shard_batch(batch, DistEnv(), 4), LMLoss())
    assert abs(loss - (total / count).item()) < 1e-5


def test_shard_batch_slices_and_errors():
    x = torch.arange(12).reshape(6, 2)
    parts = shard_batch((x, x), DistEnv(rank=1, world_size=3), accum_steps=2)
    assert [p[0][:, 0].tolist() for p in parts] == [[4], [6]]
    with pytest.raises(ValueError, match="6 rows.*2 x 2"):
        shard_batch((x, x), DistEnv(rank=0, world_size=2), accum_steps=2)
    with pytest.raises(TypeError, match="totals"):
        train_step(_model(), None, [], lambda m, b: 0.0)


def test_resume_is_exact(tmp_path):
    whole = tmp_path / "whole"
    main([*TINY, "--steps", "4", "--device", "cpu", "--out", str(whole)])
    half = tmp_path / "half"
    main([*TINY, "--steps", "4", "--stop-after", "2", "--device", "cpu", "--out", str(half)])
    resumed = main([*TINY, "--steps", "4", "--device", "cpu", "--out", str(half), "--resume"])
    assert resumed["step"] == 4 and len(resumed["losses"]) == 2
    assert _max_diff(_weights(whole), _weights(half)) == 0.0
    with pytest.raises(ValueError, match="another config"):
        main([*TINY, "--steps", "5", "--block", "8", "--device", "cpu", "--out", str(half), "--resume"])


def test_script_reports_tokens_per_second_and_mfu(tmp_path, capsys):
    metrics = main([*TINY, "--steps", "4", "--device", "cpu", "--metrics", str(tmp_path / "m.json")])
    assert metrics["tokens_per_s"] > 0 and 0 < metrics["mfu"] < 1
    assert "tokens/s" in capsys.readouterr().out and (tmp_path / "m.json").is_file()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds leftover processes through /proc (Linux)")
def test_torchrun_kills_every_process_on_timeout(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text("import time\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        torchrun([str(script)], nproc_per_node=2, timeout=8)
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            left += [pid] if str(script) in open(f"/proc/{pid}/cmdline").read() else []
        except OSError:
            pass
    assert not left, f"processes still running {script.name}: {left}"


def test_token_file_bf16_autocast_and_bad_input(tmp_path):
    import numpy as np
    np.save(tmp_path / "ids.npy", np.arange(600) % 37)
    run = main(["--preset", "tiny", "--tokens", str(tmp_path / "ids.npy"), "--block", "8", "--batch", "4",
                "--steps", "2", "--amp", "bf16", "--device", "cpu", "--no-progress"])
    assert run["dtype"] == "bfloat16" and all(np.isfinite(run["losses"]))
    with pytest.raises(ValueError, match="must split into world_size x accum_steps = 1 x 4"):
        main([*TINY, "--batch", "6", "--accum", "4", "--steps", "1", "--device", "cpu"])
    with pytest.raises(ValueError, match=r"\.pt, \.npy or \.bin"):
        main(["--tokens", str(tmp_path / "ids.txt"), "--steps", "1", "--device", "cpu"])
