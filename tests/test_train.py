"""tfmlib.train, tfmlib.schedules and tfmlib.checkpoint: losses, schedules, stopping, exact resumption."""
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from tfmlib import GPT, GPTConfig, Seq2SeqTransformer, TransformerConfig, set_seed
from tfmlib.checkpoint import MODEL_FILE, STATE_FILE, has_checkpoint, load_checkpoint, save_checkpoint
from tfmlib.data import Batches, LMBatches, encode_pairs, make_task, shift_right
from tfmlib.schedules import (Constant, LinearWarmup, WarmupCosine, WarmupInverseSqrt, as_lambda_lr,
                              make_schedule, noam_lr)
from tfmlib.train import (ClassificationLoss, LMLoss, NonFiniteLossError, Seq2SeqLoss, evaluate_loss, fit,
                          label_smoothed_cross_entropy, make_optimizer)

FAST = dict(progress=False, device="cpu")


@pytest.fixture(scope="module")
def copy_data():
    splits = make_task("copy", n_train=600, n_val=60, n_test=0, seed=0, min_len=2, max_len=6)
    vocab = splits.vocab()
    src, tgt = encode_pairs(splits.train, vocab)
    return vocab, Batches(src, tgt, batch_size=32, seed=0, pad_id=vocab.pad_id), encode_pairs(splits.val, vocab)


def tiny_seq2seq(vocab, dropout=0.0, seed=0):
    set_seed(seed)
    cfg = TransformerConfig.preset("tiny", src_vocab_size=len(vocab), tgt_vocab_size=len(vocab),
                                   dropout=dropout, d_ff=32)
    return Seq2SeqTransformer(cfg)


def tiny_gpt(dropout=0.1, seed=0):
    set_seed(seed)
    return GPT(GPTConfig.preset("tiny", vocab_size=17, dropout=dropout, max_len=16))


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- losses

@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothed_cross_entropy_equals_pytorch(smoothing):
    logits = torch.randn(3, 7, 11)
    targets = torch.randint(1, 11, (3, 7))
    targets[0, 4:] = 0  # padding
    ours = label_smoothed_cross_entropy(logits, targets, smoothing, ignore_index=0)
    ref = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), label_smoothing=smoothing, ignore_index=0)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    if smoothing:  # smoothing really changes the loss (not a copy of plain cross-entropy)
        assert not torch.allclose(ours, F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=0))


def test_label_smoothing_rejects_bad_input():
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothed_cross_entropy(torch.randn(2, 5), torch.tensor([1, 2]), 1.5)
    with pytest.raises(ValueError, match="must agree"):
        label_smoothed_cross_entropy(torch.randn(2, 3, 5), torch.tensor([1, 2]))


def test_seq2seq_loss_uses_shifted_targets_and_ignores_padding(copy_data):
    vocab, batches, _ = copy_data
    model = tiny_seq2seq(vocab).eval()
    src, tgt = batches.batch_at(0)
    assert (tgt == vocab.pad_id).any(), "the batch should contain padding"
    logits = model(src, shift_right(tgt, vocab.bos_id))
    expected = label_smoothed_cross_entropy(logits, tgt, 0.1, ignore_index=vocab.pad_id)
    got = Seq2SeqLoss(bos_id=vocab.bos_id, pad_id=vocab.pad_id, label_smoothing=0.1)(model, (src, tgt))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_lm_and_classification_losses():
    model = tiny_gpt(0.0).eval()
    x, y = LMBatches(torch.arange(100) % 17, block_size=8, batch_size=4).batch_at(0)
    torch.testing.assert_close(LMLoss()(model, (x, y)), F.cross_entropy(model(x).reshape(-1, 17), y.reshape(-1)))
    linear = torch.nn.Linear(4, 3)
    feats, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(ClassificationLoss()(linear, (feats, labels)), F.cross_entropy(linear(feats), labels))


# --------------------------------------------------------------------------- schedules

def test_schedule_values_at_known_steps():
    cos = WarmupCosine(warmup_steps=10, total_steps=110)
    assert cos(0) == pytest.approx(0.1) and cos(4) == pytest.approx(0.5) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(0.5) and cos(110) == pytest.approx(0.0, abs=1e-12)
    assert cos(500) == pytest.approx(0.0, abs=1e-12)
    assert WarmupCosine(0, 100, min_ratio=0.1)(100) == pytest.approx(0.1)
    noam = WarmupInverseSqrt(warmup_steps=4)
    assert [noam(s) for s in (0, 1, 3)] == pytest.approx([0.25, 0.5, 1.0])
    assert noam(15) == pytest.approx(0.5) and noam(63) == pytest.approx(0.25)
    assert LinearWarmup(4)(1) == pytest.approx(0.5) and LinearWarmup(4)(100) == 1.0 and Constant()(7) == 1.0


def test_noam_lr_is_the_papers_formula():
    d_model, warmup = 512, 4000
    for step in (0, 99, 3999, 4000, 20000):
        s = step + 1
        assert noam_lr(step, d_model, warmup) == pytest.approx(d_model ** -0.5 * min(s ** -0.5, s * warmup ** -1.5))
        assert noam_lr(step, d_model, warmup) == pytest.approx(
            d_model ** -0.5 * warmup ** -0.5 * WarmupInverseSqrt(warmup)(step))
    assert max(noam_lr(s, d_model, warmup) for s in range(8000)) == pytest.approx(noam_lr(3999, d_model, warmup))


def test_make_schedule_and_lambda_lr_agree():
    assert make_schedule("cosine", 5, 50) == WarmupCosine(5, 50)
    assert make_schedule(None) == Constant() and make_schedule(None, 3) == LinearWarmup(3)
    assert make_schedule("noam", 8) == WarmupInverseSqrt(8)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("linear-ish")
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(20, 10)
    weight = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([weight], lr=0.5)
    sched = WarmupCosine(3, 12)
    scheduler = as_lambda_lr(opt, sched)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert seen == pytest.approx([0.5 * sched(s) for s in range(12)])


def test_fit_records_the_schedule(copy_data):
    vocab, batches, _ = copy_data
    history = fit(tiny_seq2seq(vocab), batches, loss_fn=Seq2SeqLoss(), steps=6, lr=0.01,
                  schedule="cosine", warmup_steps=2, **FAST)
    assert history.lr == pytest.approx([0.01 * WarmupCosine(2, 6)(s) for s in range(6)])
    assert history.steps == [1, 2, 3, 4, 5, 6] and history.stop_reason is None


# --------------------------------------------------------------------------- stopping

def test_interrupt_keeps_the_model_and_returns_the_history(copy_data):
    vocab, batches, _ = copy_data
    model = tiny_seq2seq(vocab)
    before = params_of(model)

    def interrupt_at_3(state):
        if state.step == 3:
            raise KeyboardInterrupt

    history = fit(model, batches, loss_fn=Seq2SeqLoss(), steps=50, callbacks=[interrupt_at_3], **FAST)
    assert history.interrupted and len(history.loss) == 3 and history.steps[-1] == 3
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "weights did not change"
    assert all(p.grad is None for p in model.parameters())


def test_ctrl_c_finishes_the_current_step_then_stops(copy_data):
    vocab, batches, _ = copy_data
    handler_before = signal.getsignal(signal.SIGINT)

    def press_ctrl_c(state):
        if state.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Jupyter's "interrupt kernel" sends

    history = fit(tiny_seq2seq(vocab), batches, loss_fn=Seq2SeqLoss(), steps=50, callbacks=[press_ctrl_c], **FAST)
    assert history.interrupted and len(history.loss) == 2
    assert signal.getsignal(signal.SIGINT) is handler_before


class NaNAtCall:
    """A loss that turns NaN on its n-th call."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, model, batch):
        self.calls += 1
        loss = Seq2SeqLoss()(model, batch)
        return loss * float("nan") if self.calls == self.n else loss


def test_nan_loss_stops_before_the_bad_update(copy_data, capsys):
    vocab, batches, _ = copy_data
    model = tiny_seq2seq(vocab)
    seen = []
    history = fit(model, batches, loss_fn=NaNAtCall(5), steps=20, callbacks=[lambda s: seen.append(params_of(model))],
                  **FAST)
    assert history.diverged and len(history.loss) == 4 and all(math.isfinite(v) for v in history.loss)
    assert "loss is nan at step 5" in capsys.readouterr().out
    after = params_of(model)
    assert all(torch.equal(after[k], seen[-1][k]) for k in after), "weights must be those after step 4"
    assert all(torch.isfinite(v).all() for v in after.values())

    with pytest.raises(NonFiniteLossError, match="step 3") as err:
        fit(tiny_seq2seq(vocab), batches, loss_fn=NaNAtCall(3), steps=20, on_nan="raise", **FAST)
    assert len(err.value.history.loss) == 2


def test_callback_can_stop_and_eval_hook_runs(copy_data):
    vocab, batches, (val_src, val_tgt) = copy_data
    loss_fn = Seq2SeqLoss()

    def val_loss(model):
        assert not model.training and not torch.is_grad_enabled()
        return {"val_loss": loss_fn(model, (val_src, val_tgt))}

    history = fit(tiny_seq2seq(vocab), batches, loss_fn=loss_fn, steps=12, eval_fn=val_loss, eval_every=4, **FAST)
    assert [e["step"] for e in history.evals] == [4, 8, 12]
    assert history.metric("val_loss")[0] == [4, 8, 12]
    stopped = fit(tiny_seq2seq(vocab), batches, loss_fn=loss_fn, steps=12, eval_fn=val_loss, eval_every=4,
                  callbacks=[lambda state: state.step >= 6], **FAST)
    assert stopped.stop_reason == "callback" and stopped.steps[-1] == 6
    assert [e["step"] for e in stopped.evals] == [4, 6]  # a final evaluation at the stop


def test_fit_rejects_bad_arguments(copy_data):
    vocab, batches, _ = copy_data
    model = tiny_seq2seq(vocab)
    with pytest.raises(ValueError, match="exactly one"):
        fit(model, batches, loss_fn=Seq2SeqLoss(), **FAST)
    with pytest.raises(ValueError, match="on_nan"):
        fit(model, batches, loss_fn=Seq2SeqLoss(), steps=1, on_nan="ignore", **FAST)
    with pytest.raises(ValueError, match="no batches"):
        fit(model, [], loss_fn=Seq2SeqLoss(), steps=1, **FAST)
    history = fit(model, batches, loss_fn=Seq2SeqLoss(), epochs=1, **FAST)
    assert len(history.loss) == len(batches)


# --------------------------------------------------------------------------- checkpoints and resumption

def test_checkpoint_round_trip_with_tied_weights(tmp_path):
    model = tiny_gpt()
    data = LMBatches(torch.arange(200) % 17, block_size=8, batch_size=4)
    opt = make_optimizer(model, lr=1e-2)
    fit(model, data, loss_fn=LMLoss(), steps=3, optimizer=opt, **FAST)
    save_checkpoint(tmp_path, model, opt, step=3, extra={"note": "hello", "sizes": [1, 2]})
    assert has_checkpoint(tmp_path) and (tmp_path / MODEL_FILE).is_file() and (tmp_path / STATE_FILE).is_file()
    torch.load(tmp_path / STATE_FILE, weights_only=True)  # plain data only

    restored = tiny_gpt(seed=1)
    restored_opt = make_optimizer(restored, lr=1e-2)
    state = load_checkpoint(tmp_path, restored, restored_opt)
    assert state == {"step": 3, "extra": {"note": "hello", "sizes": [1, 2]}}
    for k, v in model.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), k
    assert restored.lm_head.weight is restored.tok_embed.weight, "tying must survive loading"
    saved_state, loaded_state = opt.state_dict()["state"], restored_opt.state_dict()["state"]
    for pid, entry in saved_state.items():
        for name, value in entry.items():
            assert torch.equal(loaded_state[pid][name], value), (pid, name)


def test_loading_checks_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path, tiny_gpt())
    save_checkpoint(tmp_path, tiny_gpt(), step=1)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path, tiny_gpt(), make_optimizer(tiny_gpt()))


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    data = LMBatches(torch.arange(300) % 17, block_size=8, batch_size=4, seed=3)
    sched = WarmupCosine(warmup_steps=3, total_steps=12)  # dropout 0.1: the RNG must be restored too
    kwargs = dict(loss_fn=LMLoss(), lr=3e-3, schedule=sched, **FAST)
    straight = tiny_gpt(seed=0)
    full = fit(straight, data, steps=12, **kwargs)

    first = tiny_gpt(seed=0)
    fit(first, data, steps=6, checkpoint_dir=tmp_path, **kwargs)
    torch.manual_seed(123)  # anything that happens between the two calls must not matter
    resumed_model = tiny_gpt(seed=99)
    resumed = fit(resumed_model, data, steps=12, checkpoint_dir=tmp_path, resume=True, **kwargs)
    assert resumed.loss == full.loss and resumed.steps == full.steps
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[k], v), f"{k} differs after resuming"


def test_resume_from_a_plain_list_of_batches(tmp_path):
    data = [LMBatches(torch.arange(300) % 17, block_size=8, batch_size=4).batch_at(i) for i in range(5)]
    kwargs = dict(loss_fn=LMLoss(), lr=3e-3, **FAST)
    straight = tiny_gpt()
    fit(straight, data, steps=8, **kwargs)  # 8 steps: one pass and a bit over 5 batches
    fit(tiny_gpt(), data, steps=3, checkpoint_dir=tmp_path, **kwargs)
    resumed = tiny_gpt(seed=5)
    fit(resumed, data, steps=8, checkpoint_dir=tmp_path, resume=True, **kwargs)
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


# --------------------------------------------------------------------------- it learns

def test_a_tiny_model_learns_the_copy_task(copy_data):
    vocab, batches, (val_src, val_tgt) = copy_data
    model = tiny_seq2seq(vocab)
    loss_fn = Seq2SeqLoss(bos_id=vocab.bos_id, pad_id=vocab.pad_id)
    before = evaluate_loss(model, [(val_src, val_tgt)], loss_fn)
    history = fit(model, batches, loss_fn=loss_fn, steps=150, lr=1e-2, schedule="cosine", warmup_steps=10, **FAST)
    after = evaluate_loss(model, [(val_src, val_tgt)], loss_fn)
    assert after < 0.5 * before, (before, after)
    assert sum(history.loss[-10:]) / 10 < 0.5 * sum(history.loss[:10]) / 10


def test_a_seeded_dataloader_also_resumes_exactly(tmp_path):
    from torch.utils.data import DataLoader

    from tfmlib.data import PadCollate
    tokens = (torch.arange(120) % 17).tolist()
    examples = [(tokens[i:i + 9][:-1], tokens[i:i + 9][1:]) for i in range(0, 100, 3)]  # 34 (x, y) pairs

    def loader():  # a new loader with the same seed replays the same order
        return DataLoader(examples, batch_size=8, shuffle=True, collate_fn=PadCollate(0),
                          generator=torch.Generator().manual_seed(0))

    kwargs = dict(loss_fn=LMLoss(), lr=3e-3, **FAST)
    straight = tiny_gpt()
    fit(straight, loader(), steps=7, **kwargs)  # 5 batches per epoch: crosses an epoch boundary
    fit(tiny_gpt(), loader(), steps=3, checkpoint_dir=tmp_path, **kwargs)
    resumed = tiny_gpt(seed=4)
    fit(resumed, loader(), steps=7, checkpoint_dir=tmp_path, resume=True, **kwargs)
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
