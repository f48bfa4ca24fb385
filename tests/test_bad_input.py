"""Bad input raises an error that names what was expected and what was given."""
import pytest
import torch

from tfmlib import (GPT, GPTConfig, LayerNorm, MultiHeadAttention, SinusoidalPositionalEncoding,
                    LearnedPositionalEmbedding, TokenEmbedding, TransformerConfig, causal_mask,
                    get_device, scaled_dot_product_attention)


def test_mha_wrong_rank():
    with pytest.raises(ValueError, match=r"query must have 3 dimensions, got shape \(4, 16\)"):
        MultiHeadAttention(16, 4)(torch.randn(4, 16))


def test_mha_wrong_width():
    with pytest.raises(ValueError, match=r"query must have last dimension 16, got shape \(2, 3, 12\)"):
        MultiHeadAttention(16, 4)(torch.randn(2, 3, 12))


def test_mha_integer_input():
    with pytest.raises(TypeError, match="floating-point.*torch.int64"):
        MultiHeadAttention(16, 4)(torch.ones(2, 3, 16, dtype=torch.long))


def test_d_model_not_divisible_by_heads():
    with pytest.raises(ValueError, match="d_model must be divisible by n_heads: got d_model=10, n_heads=4"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="d_model=10, n_heads=4"):
        TransformerConfig(d_model=10, n_heads=4)


def test_heads_not_divisible_by_kv_heads():
    with pytest.raises(ValueError, match="n_heads must be divisible by n_kv_heads: got n_heads=4, n_kv_heads=3"):
        MultiHeadAttention(16, 4, n_kv_heads=3)
    with pytest.raises(ValueError, match="n_heads=6, n_kv_heads=4"):
        GPTConfig(d_model=24, n_heads=6, n_kv_heads=4)


def test_mask_wrong_dtype():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(TypeError, match=r"mask must be a boolean tensor \(True = may attend\), got dtype torch.float32"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(3, 3))
    with pytest.raises(TypeError, match="boolean"):
        MultiHeadAttention(16, 4)(torch.randn(2, 3, 16), mask=torch.ones(3, 3, dtype=torch.long))


def test_mask_wrong_shape():
    q, k = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match=r"mask must broadcast to the attention scores' shape \(1, 2, 3, 5\).*got shape \(3, 3\)"):
        scaled_dot_product_attention(q, k, k, mask=causal_mask(3))
    with pytest.raises(ValueError, match=r"got shape \(3, 1, 1, 3\)"):
        MultiHeadAttention(16, 4)(torch.randn(2, 3, 16), mask=torch.ones(3, 1, 1, 3, dtype=torch.bool))


def test_qk_width_mismatch():
    with pytest.raises(ValueError, match=r"query and key must share their last dimension d_k.*\(2, 3, 4\).*\(2, 3, 5\)"):
        scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(2, 3, 5))


def test_sequence_longer_than_positional_table():
    for pe in (SinusoidalPositionalEncoding(8, max_len=10), LearnedPositionalEmbedding(8, max_len=10)):
        with pytest.raises(ValueError, match="sequence length 12 exceeds the positional table's max_len=10"):
            pe(torch.zeros(1, 12, 8))


def test_token_ids_out_of_range_or_float():
    emb = TokenEmbedding(5, 4)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 4\], got ids from 0 to 7"):
        emb(torch.tensor([[0, 7]]))
    with pytest.raises(TypeError, match="integer tensor of token ids, got dtype torch.float32"):
        emb(torch.zeros(1, 3))


def test_unknown_preset_and_unknown_field():
    with pytest.raises(ValueError, match=r"unknown TransformerConfig preset 'huge'; choose one of \['base', 'cpu', 'gpu', 'tiny'\]"):
        TransformerConfig.preset("huge")
    with pytest.raises(TypeError, match=r"GPTConfig has no field\(s\) \['n_head'\]"):
        GPTConfig.preset("cpu", n_head=4)


def test_layernorm_wrong_width_and_bad_config_values():
    with pytest.raises(ValueError, match=r"last dimension 8, got shape \(2, 6\)"):
        LayerNorm(8)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="dropout must be in"):
        GPTConfig(dropout=1.5)
    with pytest.raises(ValueError, match="activation must be 'relu' or 'gelu' or 'gelu_tanh', got 'tanh'"):
        TransformerConfig(activation="tanh")


def test_model_given_wrong_config_type_or_ids():
    with pytest.raises(TypeError, match="config must be a GPTConfig, got TransformerConfig"):
        GPT(TransformerConfig())
    with pytest.raises(ValueError, match=r"idx must have 2 dimensions, got shape \(5,\)"):
        GPT(GPTConfig.preset("tiny"))(torch.zeros(5, dtype=torch.long))


def test_unknown_device_name():
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'mps', got 'tpu'"):
        get_device("tpu")


def test_query_key_batch_dims_do_not_broadcast():
    with pytest.raises(ValueError, match=r"broadcastable leading dimensions.*\(2, 3, 4\).*\(5, 3, 4\)"):
        scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(5, 3, 4), torch.randn(5, 3, 4),
                                     mask=torch.ones(3, 3, dtype=torch.bool))


def test_rope_negative_offset_and_table_too_short():
    from tfmlib import apply_rope, rope_cache
    cos, sin = rope_cache(8, 4)
    with pytest.raises(ValueError, match="offset must be >= 0, got -1"):
        apply_rope(torch.randn(2, 3, 4), cos, sin, offset=-1)
    with pytest.raises(ValueError, match="positions up to 10 exceed the RoPE table's length 8"):
        apply_rope(torch.randn(2, 3, 4), cos, sin, offset=7)
