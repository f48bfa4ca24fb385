"""Edge cases that real use hits (issue 10): a query with nothing to attend to, ignored rows that
hold NaN or -inf, length guards at the exact boundary, exact resume, numerics at the knobs' edges."""
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close
from tfmlib import (GPT, GPTConfig, MultiHeadAttention, Seq2SeqTransformer, TransformerConfig, causal_mask,
                    masked_softmax, padding_mask, record_attention, scaled_dot_product_attention)
from tfmlib.losses import Seq2SeqLoss

# ---------------------------------------------------------------- 1. a query with nothing to attend to
ALL_MASKED = torch.tensor([[True, True, False], [False, False, False], [True, False, True]])  # row 2: no key


def test_masked_softmax_gives_zeros_for_a_row_with_no_key():
    scores = torch.randn(3, 3)
    weights = masked_softmax(scores, ALL_MASKED)
    assert torch.equal(weights[1], torch.zeros(3))
    assert_close(weights[[0, 2]].sum(-1), torch.ones(2), what="rows with keys still sum to 1")
    # a key-padding mask (B, 1, 1, T_k) whose second row is all padding: every query of that row
    weights = masked_softmax(torch.randn(2, 1, 3, 4), torch.tensor([[True] * 4, [False] * 4])[:, None, None, :])
    assert torch.equal(weights[1], torch.zeros(1, 3, 4)) and torch.isfinite(weights).all()


@pytest.mark.parametrize("mask", [ALL_MASKED, padding_mask(torch.tensor([[5, 6, 7], [0, 0, 0]])),
                                  padding_mask(torch.tensor([[5, 6, 0], [0, 0, 0]])) & causal_mask(3)],
                         ids=["explicit", "padding-row", "padding-and-causal"])
def test_sdpa_all_masked_rows_equal_pytorch_outputs_and_gradients(mask):
    q, k, v = (torch.randn(2, 2, 3, 4, requires_grad=True) for _ in range(3))
    ours, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(ours).all() and torch.isfinite(weights).all()
    assert_close(ours, ref, what="context")
    g = torch.randn_like(ref)
    for a, b, name in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), "qkv"):
        assert torch.isfinite(a).all(), f"grad {name} is not finite"
        assert_close(a, b, what=f"grad {name}")


@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_mha_same_numbers_with_or_without_weights(n_kv_heads):
    mha = MultiHeadAttention(8, 2, n_kv_heads).eval()
    x = torch.randn(2, 3, 8)
    mask = padding_mask(torch.tensor([[5, 6, 7], [0, 0, 0]]))
    fused, none = mha(x, mask=mask)
    written, weights = mha(x, mask=mask, need_weights=True)
    assert none is None and torch.isfinite(written).all()
    assert_close(written, fused, what="need_weights=True vs fused")
    assert torch.equal(weights[1], torch.zeros_like(weights[1]))
    # the row with no key gives a zero context, so its output is the output projection's bias
    assert_close(fused[1], mha.out_proj.bias.expand(3, 8), what="empty row -> out_proj(0)")


def test_seq2seq_with_an_all_padding_source_is_finite_on_every_path():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(TransformerConfig.preset("tiny", src_vocab_size=10, tgt_vocab_size=10, dropout=0.0))
    src = torch.tensor([[5, 6, 7], [0, 0, 0]])
    tgt = torch.tensor([[4, 5, 2], [4, 5, 2]])
    loss_fn = Seq2SeqLoss()
    model.eval()
    logits = model(src, tgt)
    with record_attention(model):
        recorded = model(src, tgt)
        loss_recorded = loss_fn(model, (src, tgt))
    assert torch.isfinite(logits).all()
    assert_close(recorded, logits, what="logits with weights recorded")
    assert_close(loss_recorded, loss_fn(model, (src, tgt)), what="loss with weights recorded")
    model.train()  # training mode (dropout 0): the loss and its gradient stay finite on both paths
    for record in (False, True):
        model.zero_grad()
        if record:
            with record_attention(model):
                loss = loss_fn(model, (src, tgt))
        else:
            loss = loss_fn(model, (src, tgt))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---------------------------------------------------------------- 3. losses on any valid input
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("logits,targets,eps,expected", [
    ([[0.0, 0.0], [NAN, NAN]], [0, -100], 0.1, 0.693147),        # an ignored row holds NaN
    ([[0.0, -INF, 1.0]], [2], 0.0, 0.313262),                     # -inf logit, no smoothing
    ([[0.0, -INF, 1.0]], [2], 0.1, INF),                          # with smoothing PyTorch says inf
    ([[0.0, 1.0], [INF, -INF]], [1, -100], 0.2, None),            # ignored row with +-inf
    ([[0.0, 1.0]], [-100], 0.0, NAN),                             # nothing counted: 0 / 0, as PyTorch
])
def test_label_smoothed_cross_entropy_equals_pytorch_on_edge_inputs(logits, targets, eps, expected):
    from tfmlib.losses import label_smoothed_cross_entropy
    logits, targets = torch.tensor(logits), torch.tensor(targets)
    ours = label_smoothed_cross_entropy(logits, targets, eps)
    ref = F.cross_entropy(logits, targets, label_smoothing=eps)
    torch.testing.assert_close(ours, ref, equal_nan=True)
    if expected is not None:
        torch.testing.assert_close(ours, torch.tensor(expected), equal_nan=True)


def test_label_smoothed_cross_entropy_half_precision_and_bad_targets():
    from tfmlib.losses import label_smoothed_cross_entropy
    logits = (torch.randn(4, 7) * 30).half()  # fp16: computed in float32
    targets = torch.tensor([1, 6, -100, 0])
    torch.testing.assert_close(label_smoothed_cross_entropy(logits, targets, 0.1),
                               F.cross_entropy(logits.float(), targets, label_smoothing=0.1))
    with pytest.raises(ValueError, match=r"\[0, 6\].*from 0 to 7"):
        label_smoothed_cross_entropy(logits, torch.tensor([1, 7, -100, 0]))
    with pytest.raises(TypeError, match="integer"):
        label_smoothed_cross_entropy(logits, targets.float())


class _FixedLogits(torch.nn.Module):
    """model(x) -> the logits stored for those rows (ignores everything else)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, *rest):
        return self.logits[x[:, 0]]  # x[:, 0] holds the example index


def test_evaluate_loss_averages_over_tokens_not_batches():
    from tfmlib.losses import LMLoss
    from tfmlib.train import evaluate_loss
    N, T, V = 6, 5, 7
    logits = torch.randn(N, T, V)
    targets = torch.randint(0, V, (N, T))
    targets[0, 1:] = -100            # example 0 has one token, the others many
    targets[3, :] = -100             # example 3 none at all
    x = torch.arange(N)[:, None].expand(N, T)
    model, loss_fn = _FixedLogits(logits), LMLoss()
    whole = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    for batch_size in (1, 2, 4, 6):
        data = [(x[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, N, batch_size)]
        torch.testing.assert_close(torch.tensor(evaluate_loss(model, data, loss_fn)), whole)
    total, count = loss_fn.totals(model, (x, targets))
    assert int(count) == int((targets != -100).sum())
    torch.testing.assert_close(total / count, loss_fn(model, (x, targets)))


def test_seq2seq_and_classification_totals_equal_pytorch():
    from tfmlib.losses import ClassificationLoss, Seq2SeqLoss
    logits = torch.randn(3, 4)
    labels = torch.tensor([0, 3, 1])
    clf = ClassificationLoss(label_smoothing=0.1)
    model = lambda x: logits  # noqa: E731
    total, count = clf.totals(model, (None, labels))
    assert int(count) == 3
    torch.testing.assert_close(total / 3, F.cross_entropy(logits, labels, label_smoothing=0.1))
    s2s = Seq2SeqLoss(bos_id=1, pad_id=0)
    tgt = torch.tensor([[4, 2, 0], [5, 6, 2]])
    seq_logits = torch.randn(2, 3, 8)
    seq_logits[0, 2] = NAN           # the padded position's logits are NaN: ignored
    total, count = s2s.totals(lambda src, tgt_in: seq_logits, (None, tgt))
    assert int(count) == 5 and torch.isfinite(total)
    torch.testing.assert_close(total / count, F.cross_entropy(seq_logits.flatten(0, 1), tgt.flatten(), ignore_index=0))


def test_sequence_log_prob_and_mean_pool_ignore_padding_whatever_it_holds():
    from tfmlib.bert import mean_pool
    from tfmlib.decoding import sequence_log_prob

    class Model:
        def __call__(self, src, tgt_in):
            logits = torch.zeros(*tgt_in.shape, 5)
            logits[..., 0] = -INF    # the pad id is impossible: log p(pad) = -inf, must not be scored
            return logits

    tokens = torch.tensor([[3, 2, 0], [4, 4, 2]])
    out = sequence_log_prob(Model(), torch.zeros(2, 1, dtype=torch.long), tokens, bos_id=1, pad_id=0)
    torch.testing.assert_close(out, torch.tensor([2, 3]) * -torch.log(torch.tensor(4.0)))
    hidden = torch.randn(2, 3, 4)
    hidden[0, 2] = NAN
    pooled = mean_pool(hidden, torch.tensor([[True, True, False], [False, False, False]]))
    torch.testing.assert_close(pooled, torch.stack([hidden[0, :2].mean(0), torch.zeros(4)]))


# ---------------------------------------------------------------- 2. length guards at the exact boundary
def _seq2seq(max_len=8):
    torch.manual_seed(0)
    cfg = TransformerConfig.preset("tiny", src_vocab_size=12, tgt_vocab_size=12, max_len=max_len, dropout=0.0)
    return Seq2SeqTransformer(cfg).eval()


def test_decoding_uses_every_position_and_refuses_one_more():
    from tfmlib.decoding import beam_search, greedy_decode
    model, src = _seq2seq(8), torch.tensor([[5, 6, 7, 8]])
    tokens = greedy_decode(model, src, bos_id=1, eos_id=99, max_len=8)  # eos never comes: all 8 steps run
    assert tokens.shape == (1, 8)
    beams = beam_search(model, src, bos_id=1, eos_id=99, max_len=8, beam_size=1)
    assert beams[0][0].tokens == tokens[0].tolist()  # one beam is greedy, over all 8 positions
    for decode in (greedy_decode, beam_search):
        with pytest.raises(ValueError, match=r"max_len <= 8"):
            decode(model, src, bos_id=1, eos_id=99, max_len=9)


def test_positional_tables_gpt_cache_and_rope_at_the_boundary():
    from tfmlib.positions import SinusoidalPositionalEncoding, apply_rope, rope_cache
    pos = SinusoidalPositionalEncoding(4, max_len=5)
    assert pos(torch.zeros(1, 5, 4)).shape == (1, 5, 4)
    with pytest.raises(ValueError, match="exceeds"):
        pos(torch.zeros(1, 6, 4))
    cos, sin = rope_cache(5, 4)
    assert apply_rope(torch.randn(1, 3, 4), cos, sin, offset=2).shape == (1, 3, 4)
    with pytest.raises(ValueError, match="exceed"):
        apply_rope(torch.randn(1, 3, 4), cos, sin, offset=3)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.preset("tiny", vocab_size=11, max_len=6, dropout=0.0)).eval()
    prompt = torch.randint(0, 11, (2, 5))
    plain = gpt.generate(prompt, 4, temperature=0)      # crosses max_len: the window slides
    cached = gpt.generate(prompt, 4, temperature=0, use_cache=True)
    assert torch.equal(plain, cached)
    from tfmlib.kv_cache import KVCache
    cache = KVCache(1)
    gpt.forward_cached(prompt, cache)
    gpt.forward_cached(prompt[:, :1], cache)              # 6 = max_len positions: fine
    with pytest.raises(ValueError, match="exceed max_len=6"):
        gpt.forward_cached(prompt[:, :1], cache)


def test_lm_batches_and_encoder_classifier_at_the_boundary():
    from tfmlib.bert import EncoderClassifier, EncoderConfig
    from tfmlib.data import LMBatches
    ids = torch.arange(9)
    x, y = LMBatches(ids, block_size=8, batch_size=3).batch_at(0)  # exactly block_size + 1 tokens
    assert torch.equal(x[0], ids[:8]) and torch.equal(y[0], ids[1:])
    with pytest.raises(ValueError, match="more than block_size=9"):
        LMBatches(ids, block_size=9)
    model = EncoderClassifier(EncoderConfig.preset("tiny", vocab_size=10, max_len=6))
    assert model(torch.full((2, 5), 4)).shape == (2, 2)    # 5 tokens + [CLS] = 6 positions
    with pytest.raises(ValueError, match=r"at most 5 tokens plus the \[CLS\]"):
        model(torch.full((2, 6), 4))
    mean_model = EncoderClassifier(EncoderConfig.preset("tiny", vocab_size=10, max_len=6, pooling="mean"))
    assert mean_model(torch.full((2, 6), 4)).shape == (2, 2)


# ---------------------------------------------------------------- 4. resume is exact however it is called
def _tiny_gpt(seed=0):
    from tfmlib import set_seed
    set_seed(seed)
    return GPT(GPTConfig.preset("tiny", vocab_size=17, dropout=0.1, max_len=16))


@pytest.mark.parametrize("same_optimizer", [True, False], ids=["same-optimizer", "fresh-optimizer"])
def test_resume_with_a_passed_optimizer_equals_an_uninterrupted_run(tmp_path, same_optimizer):
    from tfmlib.data import LMBatches
    from tfmlib.losses import LMLoss
    from tfmlib.schedules import WarmupCosine
    from tfmlib.train import fit, make_optimizer
    data = LMBatches(torch.arange(300) % 17, block_size=8, batch_size=4, seed=3)
    kwargs = dict(loss_fn=LMLoss(), schedule=WarmupCosine(warmup_steps=3, total_steps=10), progress=False,
                  device="cpu")
    straight = _tiny_gpt()
    full = fit(straight, data, steps=10, optimizer=make_optimizer(straight, lr=3e-3), **kwargs)

    model = _tiny_gpt()
    opt = make_optimizer(model, lr=3e-3)
    fit(model, data, steps=5, optimizer=opt, checkpoint_dir=tmp_path, **kwargs)
    if not same_optimizer:
        model = _tiny_gpt(seed=7)
        opt = make_optimizer(model, lr=3e-3)
    resumed = fit(model, data, steps=10, optimizer=opt, checkpoint_dir=tmp_path, resume=True, **kwargs)
    assert resumed.lr == full.lr  # steps 6-10 at the right learning rates, not 0.85 x them
    assert resumed.loss == full.loss
    for k, v in straight.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), f"{k} differs after resuming"


def test_a_second_fit_with_the_same_optimizer_starts_from_the_base_lr():
    from tfmlib.data import LMBatches
    from tfmlib.losses import LMLoss
    from tfmlib.schedules import WarmupCosine
    from tfmlib.train import fit, make_optimizer
    data = LMBatches(torch.arange(300) % 17, block_size=8, batch_size=4, seed=3)
    model = _tiny_gpt()
    opt = make_optimizer(model, lr=3e-3)
    kwargs = dict(loss_fn=LMLoss(), optimizer=opt, progress=False, device="cpu")
    first = fit(model, data, steps=6, schedule=WarmupCosine(2, 6), **kwargs)
    assert first.lr[-1] < 1e-3                     # the cosine is near its end ...
    second = fit(model, data, steps=3, **kwargs)    # ... and a constant schedule is back at 3e-3
    assert second.lr == [3e-3] * 3
    assert all(group["lr"] == 3e-3 for group in opt.param_groups)


# ---------------------------------------------------------------- 5. numerics at the edges of the knobs
@pytest.mark.parametrize("temperature", [1e-3, 1e-30, 1e-45])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tiny_temperature_gives_the_argmax_in_any_precision(temperature, dtype):
    from tfmlib import sample_next, sampling_probs
    logits = (torch.tensor([[1.0, 2.0, 3.0, 0.5], [40.0, -3.0, 7.0, 39.0]]) * 100).to(dtype)
    probs = sampling_probs(logits, temperature)
    assert probs.dtype == torch.float32 and torch.isfinite(probs).all()
    assert torch.equal(probs, F.one_hot(torch.tensor([2, 0]), 4).float())
    assert sample_next(logits, temperature).flatten().tolist() == [2, 0]


def test_ties_share_the_mass_and_huge_or_infinite_logits_are_handled():
    from tfmlib import sample_next, sampling_probs
    torch.testing.assert_close(sampling_probs(torch.tensor([[1.0, 3.0, 3.0]]), 1e-20),
                               torch.tensor([[0.0, 0.5, 0.5]]))
    torch.testing.assert_close(sampling_probs(torch.tensor([[1e38, 3e38, -3e38]])), torch.tensor([[0.0, 1.0, 0.0]]))
    inf = float("inf")
    torch.testing.assert_close(sampling_probs(torch.tensor([[inf, 5.0, inf]]), 2.0), torch.tensor([[0.5, 0.0, 0.5]]))
    assert sample_next(torch.tensor([[0.0, inf, 1.0]]), 0).item() == 1
    for kwargs in (dict(top_k=1), dict(top_p=0.3), dict(top_k=2, top_p=0.9)):
        probs = sampling_probs((torch.randn(3, 50) * 1e4).half(), 0.7, **kwargs)
        assert torch.isfinite(probs).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_sampling_refuses_nan_and_bad_temperatures_up_front():
    from tfmlib import sample_next, sampling_probs
    with pytest.raises(ValueError, match="NaN"):
        sampling_probs(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="NaN"):
        sample_next(torch.tensor([[0.0, float("nan")]]), 0)
    with pytest.raises(ValueError, match="all -inf"):
        sampling_probs(torch.full((1, 3), float("-inf")))
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            sampling_probs(torch.zeros(1, 3), bad)


def test_softmax_and_losses_with_half_and_extreme_values_equal_pytorch():
    from tfmlib.losses import label_smoothed_cross_entropy
    scores = torch.tensor([[1e4, -1e4, 0.0], [-60000.0, 60000.0, 0.0]]).half()
    weights = masked_softmax(scores)
    torch.testing.assert_close(weights.float(), torch.softmax(scores.float(), -1))
    logits = torch.tensor([[3e38, -3e38, 0.0], [1e-30, 0.0, -1e-30]])
    targets = torch.tensor([0, 2])
    for eps in (0.0, 0.1):
        torch.testing.assert_close(label_smoothed_cross_entropy(logits, targets, eps),
                                   F.cross_entropy(logits, targets, label_smoothing=eps))
    half = torch.tensor([[60000.0, -60000.0, 0.0], [1e-3, 0.0, -1e-3]]).half()  # near float16's limit
    torch.testing.assert_close(label_smoothed_cross_entropy(half, targets, 0.1),
                               F.cross_entropy(half.float(), targets, label_smoothing=0.1))


# ---------------------------------------------------------------- hygiene: token vectors do not dwarf positions
def test_scaled_token_embedding_starts_at_the_size_of_the_sinusoidal_table():
    from tfmlib import TokenEmbedding, sinusoidal_encoding
    torch.manual_seed(0)
    for d_model in (16, 64, 512):
        emb = TokenEmbedding(1000, d_model)                      # scale=True: x sqrt(C)
        vectors = emb(torch.arange(1000)[None])                  # (1, V, C)
        token_rms = vectors.pow(2).mean().sqrt().item()
        position_rms = sinusoidal_encoding(128, d_model).pow(2).mean().sqrt().item()   # ~0.71
        assert 0.9 < token_rms < 1.1 and 0.5 < token_rms / position_rms < 2.0
    padded = TokenEmbedding(10, 8, padding_idx=0)
    assert torch.equal(padded(torch.tensor([[0]])), torch.zeros(1, 1, 8))
