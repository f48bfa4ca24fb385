"""Embeddings, positions, configs and the two full models."""
import math

import pytest
import torch
import torch.nn as nn

from helpers import assert_close
from tfmlib import (GPT, GPTConfig, LearnedPositionalEmbedding, Seq2SeqTransformer,
                    SinusoidalPositionalEncoding, TokenEmbedding, TransformerConfig, apply_rope,
                    count_parameters, get_device, preset_for_device, rope_cache, sample_next,
                    set_seed, sinusoidal_encoding)


def test_token_embedding_equals_one_hot_times_matrix():
    emb = TokenEmbedding(10, 6, scale=False)
    ids = torch.tensor([[1, 4, 9]])
    one_hot = nn.functional.one_hot(ids, 10).float()
    assert_close(emb(ids), one_hot @ emb.weight, what="lookup vs one-hot @ W")
    scaled = TokenEmbedding(10, 6)
    assert_close(scaled(ids), one_hot @ scaled.weight * math.sqrt(6), what="scaled lookup")


def test_sinusoidal_table_interleaves_sin_and_cos():
    pe = sinusoidal_encoding(50, 8)
    p, i = 7, 1
    angle = p / 10000 ** (2 * i / 8)
    assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert_close(pe[0], torch.tensor([0.0, 1.0] * 4), what="position 0")


def test_positional_modules_add_not_concatenate():
    x = torch.zeros(2, 5, 8)
    assert_close(SinusoidalPositionalEncoding(8, 16)(x), sinusoidal_encoding(16, 8)[:5].expand(2, 5, 8), what="PE")
    learned = LearnedPositionalEmbedding(8, 16)
    assert learned(x).shape == (2, 5, 8)
    assert count_parameters(learned) == 16 * 8


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_cache(64, 8)
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        qm = apply_rope(q.expand(64, 8), cos, sin)[m]
        kn = apply_rope(k.expand(64, 8), cos, sin)[n]
        return (qm @ kn).item()

    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-4)
    x = torch.randn(3, 10, 8)
    assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), what="rotation keeps norms")


def test_seq2seq_forward_shapes_and_padding_invariance():
    cfg = TransformerConfig.preset("tiny", src_vocab_size=12, tgt_vocab_size=9, dropout=0.0)
    model = Seq2SeqTransformer(cfg).eval()
    src = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    tgt = torch.tensor([[1, 2, 3], [1, 4, 5]])
    logits = model(src, tgt)
    assert logits.shape == (2, 3, 9)
    # extra padding on the source changes nothing
    logits_more_pad = model(torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], 1), tgt)
    assert_close(logits, logits_more_pad, what="logits with extra source padding")


def test_seq2seq_tied_embeddings_share_one_matrix():
    cfg = TransformerConfig.preset("tiny", tie_embeddings=True)
    model = Seq2SeqTransformer(cfg)
    assert model.lm_head.weight is model.tgt_embed.weight


def test_gpt_weight_tying_and_causality():
    cfg = GPTConfig.preset("tiny", vocab_size=20, dropout=0.0)
    model = GPT(cfg).eval()
    assert model.lm_head.weight is model.tok_embed.weight
    untied = GPT(cfg.replace(tie_weights=False))
    assert count_parameters(untied) - count_parameters(model) == 20 * 32
    idx = torch.randint(0, 20, (2, 10))
    out = model(idx)
    assert out.shape == (2, 10, 20)
    idx2 = idx.clone()
    idx2[:, 6:] = (idx2[:, 6:] + 1) % 20
    assert_close(model(idx2)[:, :6], out[:, :6], what="logits before the change")


def test_gpt_generate_greedy_and_sampling_are_reproducible():
    cfg = GPTConfig.preset("tiny", vocab_size=20, dropout=0.0)
    model = GPT(cfg).eval()
    prompt = torch.tensor([[1, 2, 3]])
    greedy = model.generate(prompt, 5, temperature=0)
    assert greedy.shape == (1, 8) and torch.equal(greedy[:, :3], prompt)
    a = model.generate(prompt, 5, top_k=5, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 5, top_k=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_sample_next_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0, -2.0]])
    g = torch.Generator().manual_seed(0)
    picks = {sample_next(logits, top_k=2, generator=g).item() for _ in range(200)}
    assert picks <= {0, 1} and len(picks) == 2
    picks = {sample_next(logits, top_p=0.5, generator=g).item() for _ in range(50)}
    assert picks == {0}
    assert sample_next(logits, temperature=0).item() == 0


def test_presets_and_replace():
    cfg = TransformerConfig.preset("cpu")
    assert cfg.d_model == 64 and cfg.head_size == 16
    assert cfg.replace(dropout=0.0).dropout == 0.0
    with pytest.raises(Exception):
        cfg.d_model = 3  # frozen
    assert preset_for_device("cpu") == "cpu" and preset_for_device("cuda") == "gpu"
    assert GPTConfig.preset("gpu").d_model > GPTConfig.preset("cpu").d_model


def test_device_and_seed_helpers(monkeypatch):
    monkeypatch.setenv("TFM_DEVICE", "cpu")
    assert get_device().type == "cpu"
    set_seed(3)
    a = torch.rand(3)
    set_seed(3)
    assert torch.equal(a, torch.rand(3))
