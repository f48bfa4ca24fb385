"""The Llama-style GPT against Hugging Face's LlamaForCausalLM (random weights, built from a
LlamaConfig: nothing is downloaded), RoPE against the paper's rotation matrices, and the KV cache
with RoPE and grouped-query attention against the uncached forward."""
import math

import pytest
import torch
import torch.nn as nn

from tfmlib import GPT, GPTConfig, RMSNorm, SwiGLU, rms_norm, set_seed
from tfmlib.config import BlockSpec
from tfmlib.encoder import EncoderBlock
from tfmlib.gpt import GPTBlock
from tfmlib.kv_cache import KVCache
from tfmlib.layers import LayerNorm, silu
from tfmlib.llama import config_from_llama, half_to_interleaved, load_llama_state_dict
from tfmlib.multihead import MultiHeadAttention
from tfmlib.positions import RotaryEmbedding, apply_rope, rope_cache

transformers = pytest.importorskip("transformers")  # test-only dev dependency


def tiny_llama(n_kv_heads=2, tie=False, bias=False, seed=0):
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=n_kv_heads, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=tie, attention_bias=bias, mlp_bias=bias, attn_implementation="eager")
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises norms to 1 and biases to 0: randomise them so they are tested
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(1 + 0.3 * torch.randn_like(p) if name.endswith("norm.weight") else 0.1 * torch.randn_like(p))
            elif "q_proj" in name or "k_proj" in name or "embed_tokens" in name or "lm_head" in name:
                p.mul_(10)  # sharp attention and logits of order 1-10, so that differences would show
    return hf


def loaded_gpt(hf, **overrides):
    model = GPT(config_from_llama(hf.config, **overrides)).eval()
    load_llama_state_dict(model, hf.state_dict())
    return model


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])           # MHA, GQA, MQA
@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_llama_logits_equal_hugging_face(n_kv_heads, pairing):
    hf = tiny_llama(n_kv_heads)
    mine = loaded_gpt(hf, rope_pairing=pairing)
    idx = torch.randint(0, 97, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx).logits
        out = mine(idx)
    assert (out - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("tie,bias", [(True, False), (False, True)])
def test_llama_tied_head_and_biases_equal_hugging_face(tie, bias):
    hf = tiny_llama(tie=tie, bias=bias)
    mine = loaded_gpt(hf)
    assert (mine.lm_head.weight is mine.tok_embed.weight) == tie
    assert (mine.blocks[0].self_attn.q_proj.bias is not None) == bias
    idx = torch.randint(0, 97, (2, 33), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (mine(idx) - hf(idx).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_llama_greedy_continuation_equals_hugging_face_with_and_without_cache(pairing):
    hf = tiny_llama()
    mine = loaded_gpt(hf, rope_pairing=pairing)
    prompt = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(3))
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, do_sample=False,
                      use_cache=True, pad_token_id=0)
    ref_uncached = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30,
                               do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(ref, ref_uncached)
    assert torch.equal(mine.generate(prompt, 30, temperature=0), ref)
    assert torch.equal(mine.generate(prompt, 30, temperature=0, use_cache=True), ref)


def test_llama_left_padding_with_position_ids_equals_hugging_face_and_unpadded():
    hf = tiny_llama()
    mine = loaded_gpt(hf)
    gen = torch.Generator().manual_seed(4)
    short, long = torch.randint(1, 97, (1, 6), generator=gen), torch.randint(1, 97, (1, 11), generator=gen)
    idx = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])   # (2, 11), left-padded
    key_mask = idx != 0
    key_mask[1] = True
    positions = (key_mask.long().cumsum(-1) - 1).clamp_min(0)                              # (2, 11)
    with torch.no_grad():
        out = mine(idx, positions=positions, key_mask=key_mask)
        ref = hf(idx, attention_mask=key_mask.long(), position_ids=positions).logits
        torch.testing.assert_close(out[0, 5:], mine(short)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(out[1], mine(long)[0], atol=1e-5, rtol=0)
    assert (out[key_mask] - ref[key_mask]).abs().max().item() <= 1e-4


# ---------------------------------------------------------------- RoPE against the paper's matrices

def rotation_matrix(position, head_size, pairing, base=10000.0):
    """R_m of RoFormer (Su et al., eq. 13): a 2 x 2 rotation by m * theta_k for every feature pair k."""
    R = torch.zeros(head_size, head_size, dtype=torch.float64)
    for k in range(head_size // 2):
        theta = position * base ** (-2 * k / head_size)
        a, b = (k, k + head_size // 2) if pairing == "half" else (2 * k, 2 * k + 1)
        R[a, a], R[a, b] = math.cos(theta), -math.sin(theta)
        R[b, a], R[b, b] = math.sin(theta), math.cos(theta)
    return R


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_rope_equals_rotation_matrices(pairing):
    hs, T = 8, 20
    x = torch.randn(2, 3, T, hs)
    cos, sin = rope_cache(64, hs, pairing=pairing)
    rotated = apply_rope(x, cos, sin, offset=5, pairing=pairing)
    for t in range(T):
        R = rotation_matrix(t + 5, hs, pairing)
        expected = (x[..., t, :].double() @ R.T).float()
        torch.testing.assert_close(rotated[..., t, :], expected, atol=2e-6, rtol=1e-5)
    # position ids do the same as the offset, row by row
    positions = torch.arange(5, 5 + T)
    torch.testing.assert_close(RotaryEmbedding(hs, 64, pairing=pairing)(x, positions), rotated)
    # a rotation keeps lengths, and the two pairings differ (same angles, other partners)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    other = "interleaved" if pairing == "half" else "half"
    assert not torch.allclose(rotated, apply_rope(x, *rope_cache(64, hs, pairing=other), offset=5, pairing=other))


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_rope_scores_depend_only_on_the_distance(pairing):
    rope = RotaryEmbedding(16, 128, pairing=pairing)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    rope = rope.double()

    def score(m, n):
        qm = rope(q.view(1, 1, 1, 16), torch.tensor([m]))
        kn = rope(k.view(1, 1, 1, 16), torch.tensor([n]))
        return (qm * kn).sum().item()
    assert score(7, 3) == pytest.approx(score(57, 53), abs=1e-5)   # float32 angle tables
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)


def test_interleaved_pairing_is_the_half_layout_permuted():
    hs, H, C = 8, 2, 16
    w_half = torch.randn(H * hs, C)
    x = torch.randn(1, 5, C)
    q_half = (x @ w_half.T).view(1, 5, H, hs).transpose(1, 2)
    q_int = (x @ half_to_interleaved(w_half, H).T).view(1, 5, H, hs).transpose(1, 2)
    order = torch.stack([torch.arange(hs // 2), torch.arange(hs // 2) + hs // 2], -1).flatten()
    rot_half = RotaryEmbedding(hs, 16, pairing="half")(q_half)
    rot_int = RotaryEmbedding(hs, 16, pairing="interleaved")(q_int)
    torch.testing.assert_close(rot_int, rot_half[..., order])


# ---------------------------------------------------------------- KV cache with RoPE and GQA

@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_kv_cache_with_rope_and_gqa_equals_uncached_token_for_token(pairing):
    set_seed(0)
    model = GPT(GPTConfig.preset("llama-cpu", vocab_size=50, rope_pairing=pairing, dropout=0.0)).eval()
    with torch.no_grad():  # std 0.02 makes attention almost uniform, hiding position mistakes: sharpen it
        for block in model.blocks:
            block.self_attn.q_proj.weight.mul_(20)
            block.self_attn.k_proj.weight.mul_(20)
    assert model.config.n_kv_heads == 2 and model.config.n_heads == 4
    idx = torch.randint(0, 50, (2, 30))
    with torch.no_grad():
        full = model(idx)
    cache = KVCache(model.config.n_layers)
    steps = [model.forward_cached(idx[:, :10], cache)]                  # prefill 10
    steps += [model.forward_cached(idx[:, t:t + 1], cache) for t in range(10, 25)]   # one by one
    steps.append(model.forward_cached(idx[:, 25:], cache))              # a chunk of 5
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    assert cache.keys[0].shape == (2, 2, 30, 16)                         # H_kv = 2 heads cached
    half_cache = cache.numel()
    full_heads = GPT(model.config.replace(n_kv_heads=4)).eval()
    cache4 = KVCache(2)
    full_heads.forward_cached(idx, cache4)
    assert cache4.numel() == 2 * half_cache


# ---------------------------------------------------------------- RMSNorm, SiLU, SwiGLU

def test_rmsnorm_equals_torch_rmsnorm_outputs_and_gradients():
    x = torch.randn(3, 7, 32, requires_grad=True)
    mine, ref = RMSNorm(32, eps=1e-6), nn.RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        w = 1 + 0.5 * torch.randn(32)
        mine.weight.copy_(w)
        ref.weight.copy_(w)
    g = torch.randn(3, 7, 32)
    x2 = x.detach().clone().requires_grad_(True)
    x3 = x.detach().clone().requires_grad_(True)
    w3 = w.clone().requires_grad_(True)
    out_mine, out_ref, out_written = mine(x), ref(x2), rms_norm(x3, w3, 1e-6)
    torch.testing.assert_close(out_mine, out_ref)
    torch.testing.assert_close(out_written, out_ref)
    (out_mine * g).sum().backward()
    (out_ref * g).sum().backward()
    (out_written * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(x3.grad, x2.grad)
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad)
    torch.testing.assert_close(w3.grad, ref.weight.grad)


def test_rmsnorm_equals_hugging_face_llama_rmsnorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    ref, mine = LlamaRMSNorm(16, eps=1e-6), RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(16))
        mine.weight.copy_(ref.weight)
    x = torch.randn(4, 16)
    torch.testing.assert_close(mine(x), ref(x))


def test_silu_and_swiglu_equal_references_with_gradients():
    x = torch.randn(50)
    torch.testing.assert_close(silu(x), nn.functional.silu(x))
    from transformers.models.llama.modeling_llama import LlamaMLP
    hf_cfg = transformers.LlamaConfig(hidden_size=24, intermediate_size=40, hidden_act="silu",
                                        num_attention_heads=4)
    ref, mine = LlamaMLP(hf_cfg), SwiGLU(24, 40, bias=False)
    mine.load_state_dict(ref.state_dict())
    x1 = torch.randn(2, 5, 24, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    out_mine, out_ref = mine(x1), ref(x2)
    torch.testing.assert_close(out_mine, out_ref)
    g = torch.randn_like(out_ref)
    (out_mine * g).sum().backward()
    (out_ref * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for name in ("gate_proj", "up_proj", "down_proj"):
        torch.testing.assert_close(getattr(mine, name).weight.grad, getattr(ref, name).weight.grad)


def test_swiglu_at_two_thirds_width_has_the_mlp_parameters():
    from tfmlib import FeedForward, count_parameters
    assert count_parameters(SwiGLU(64, 2 * 256 // 3 + 1, bias=False)) == 3 * 64 * 171
    assert abs(3 * 64 * 172 - count_parameters(FeedForward(64, 256, bias=False))) / (2 * 64 * 256) < 0.01


# ---------------------------------------------------------------- options: defaults, bias, init

class OldGPT(nn.Module):
    """The GPT as it was built before the options existed (EncoderBlocks, LayerNorm)."""

    def __init__(self, c):
        super().__init__()
        from tfmlib.embeddings import TokenEmbedding
        from tfmlib.transformer import make_positional
        self.tok_embed = TokenEmbedding(c.vocab_size, c.d_model, scale=False)
        self.pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first,
                                                 c.activation, c.n_kv_heads) for _ in range(c.n_layers))
        self.norm = LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.lm_head.weight = self.tok_embed.weight
        self.apply(GPT._init_weights)

    def forward(self, idx):
        x = self.pos(self.tok_embed(idx))
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.lm_head(self.norm(x))


def test_default_gpt_is_the_gpt2_style_model_it_was():
    cfg = GPTConfig.preset("cpu", vocab_size=40, dropout=0.0)
    set_seed(0)
    new = GPT(cfg)
    set_seed(0)
    old = OldGPT(cfg)
    new_sd, old_sd = new.state_dict(), old.state_dict()
    assert list(new_sd) == list(old_sd)
    for name in new_sd:
        assert torch.equal(new_sd[name], old_sd[name]), name
    idx = torch.randint(0, 40, (2, 16))
    assert torch.equal(new(idx), old(idx))


def test_bias_false_everywhere_and_scaled_init():
    cfg = GPTConfig.preset("cpu", vocab_size=40, bias=False, scaled_init=True, n_layers=8)
    set_seed(0)
    model = GPT(cfg)
    assert not any(isinstance(m, nn.Linear) and m.bias is not None for m in model.modules())
    residual_out = torch.cat([w.flatten() for b in model.blocks for w in (b.self_attn.out_proj.weight, b.ffn_out.weight)])
    others = torch.cat([b.self_attn.q_proj.weight.flatten() for b in model.blocks])
    assert residual_out.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert others.std().item() == pytest.approx(0.02, rel=0.05)


def test_block_spec_builds_the_block_and_is_frozen():
    spec = BlockSpec(norm="rmsnorm", ffn="swiglu", activation="silu", bias=False, norm_eps=1e-6)
    block = GPTBlock(32, 4, 64, n_kv_heads=2, spec=spec, rope=RotaryEmbedding(8, 16))
    assert isinstance(block.attn_sublayer.norm, RMSNorm) and isinstance(block.ffn, SwiGLU)
    assert block.self_attn.k_proj.weight.shape == (16, 32)
    with pytest.raises(Exception):
        spec.norm = "layernorm"
    assert block(torch.randn(2, 10, 32)).shape == (2, 10, 32)
    assert GPTConfig.preset("llama-cpu").block_spec() == BlockSpec(
        norm="rmsnorm", ffn="swiglu", activation="silu", bias=False, norm_eps=1e-6, dropout=0.1)


def test_llama2_7b_preset_has_its_parameter_count():
    from tfmlib import count_parameters
    with torch.device("meta"):
        assert count_parameters(GPT(GPTConfig.preset("llama2-7b"))) == 6_738_415_616


# ---------------------------------------------------------------- bad input

def test_bad_rope_input_names_expected_and_given():
    with pytest.raises(ValueError, match="RoPE needs an even head size, got 7"):
        RotaryEmbedding(7, 16)
    with pytest.raises(ValueError, match=r"RoPE pairing must be one of \('half', 'interleaved'\), got 'pairs'"):
        RotaryEmbedding(8, 16, pairing="pairs")
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 15\] \(the RoPE table's length is 16\), "
                                         r"got positions from 3 to 16"):
        RotaryEmbedding(8, 16)(torch.randn(1, 1, 14, 8), torch.arange(3, 17))
    with pytest.raises(ValueError, match="positions up to 20 exceed the RoPE table's length 16"):
        RotaryEmbedding(8, 16)(torch.randn(1, 1, 20, 8))
    with pytest.raises(ValueError, match=r"RoPE needs an even head size: d_model=36 / n_heads=4 gives 9"):
        GPTConfig(d_model=36, n_heads=4, positional="rope")
    with pytest.raises(ValueError, match=r"rope_pairing must be one of \('half', 'interleaved'\), got 'x'"):
        GPTConfig(positional="rope", rope_pairing="x")
    with pytest.raises(ValueError, match="built for head size 8, but d_model=32 / n_heads=2 gives head size 16"):
        MultiHeadAttention(32, 2, rope=RotaryEmbedding(8, 16))
    with pytest.raises(ValueError, match="positions only matter with RoPE"):
        MultiHeadAttention(32, 2)(torch.randn(1, 3, 32), positions=torch.arange(3))
    with pytest.raises(TypeError, match="positions must hold integer ids, got dtype torch.float32"):
        RotaryEmbedding(8, 16)(torch.randn(1, 1, 3, 8), torch.arange(3.0))


def test_bad_gpt_options_and_positions():
    with pytest.raises(ValueError, match=r"norm must be one of \('layernorm', 'rmsnorm'\), got 'batchnorm'"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match=r"ffn must be one of \('mlp', 'swiglu'\), got 'moe'"):
        BlockSpec(ffn="moe")
    with pytest.raises(TypeError, match="spec must be a BlockSpec, got dict"):
        GPTBlock(32, 4, 64, spec={"norm": "rmsnorm"})
    model = GPT(GPTConfig.preset("llama-cpu", vocab_size=20, max_len=16)).eval()
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 15\] \(max_len=16\), got positions from 0 to 16"):
        model(torch.zeros(1, 17, dtype=torch.long), positions=torch.arange(17))
    with pytest.raises(ValueError, match="0 earlier \\+ 17 new positions exceed max_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(1, 4\) like idx, got \(1, 5\)"):
        model(torch.zeros(1, 4, dtype=torch.long), key_mask=torch.ones(1, 5, dtype=torch.bool))
