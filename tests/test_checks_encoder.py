"""The lesson-07 checks pass the reference solutions, say "not implemented" for stubs, and
fail realistic wrong implementations with the hint that names the mistake."""
import pytest
import torch
import torch.nn as nn

from helpers import verdict
from tfmlib.checks.encoder import check_encoder_block, check_mean_pool, check_mlm_mask, check_padding_mask
from tfmlib.layers import FeedForward, LayerNorm
from tfmlib.masks import causal_mask
from tfmlib.multihead import MultiHeadAttention


def _stub(*args, **kwargs):
    raise NotImplementedError("Write your code here.")


def _verdict(result, status, hint=None):
    verdict(result, status, hint, in_hint=True)


# ---------------------------------------------------------------- padding_mask
def padding_mask(tokens, pad_id=0):
    return (tokens != pad_id)[:, None, None, :]


def pad_inverted(tokens, pad_id=0):
    return (tokens == pad_id)[:, None, None, :]


def pad_flat(tokens, pad_id=0):
    return tokens != pad_id


def pad_query_axis(tokens, pad_id=0):
    return (tokens != pad_id)[:, None, :, None]


def pad_float(tokens, pad_id=0):
    return (tokens != pad_id).float()[:, None, None, :]


def pad_fixed_zero(tokens, pad_id=0):
    return (tokens != 0)[:, None, None, :]


def pad_additive(tokens, pad_id=0):
    return torch.zeros(tokens.shape).masked_fill(tokens == pad_id, float("-inf"))[:, None, None, :]


def test_padding_mask_reference_and_stub():
    _verdict(check_padding_mask(padding_mask), "passed")
    _verdict(check_padding_mask(_stub), "not implemented")
    assert "not implemented yet" in repr(check_padding_mask(_stub))


@pytest.mark.parametrize("fn, hint", [
    (pad_inverted, "the mask is inverted"),
    (pad_flat, "(B, 1, 1, T)"),
    (pad_query_axis, "KEY axis"),
    (pad_float, "boolean tensor"),
    (pad_additive, "boolean tensor"),
    (pad_fixed_zero, "pad_id argument"),
])
def test_padding_mask_mistakes(fn, hint):
    _verdict(check_padding_mask(fn), "failed", hint)


# ------------------------------------------------------------------- mean_pool
def mean_pool(hidden, mask):
    weights = mask.float().unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1)


def mean_pool_masked_fill(hidden, mask):
    """Another correct route."""
    return hidden.masked_fill(~mask[..., None], 0.0).sum(1) / mask.sum(1, keepdim=True)


def pool_with_padding(hidden, mask):
    return hidden.mean(dim=1)


def pool_divide_by_T(hidden, mask):
    return (hidden * mask[..., None]).sum(1) / hidden.shape[1]


def pool_inverted(hidden, mask):
    weights = (~mask).float().unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1)


def pool_sum(hidden, mask):
    return (hidden * mask[..., None]).sum(1)


def pool_cls(hidden, mask):
    return hidden[:, 0]


def pool_keepdim(hidden, mask):
    weights = mask.float().unsqueeze(-1)
    return (hidden * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)


def pool_feature_axis(hidden, mask):
    return hidden.mean(-1) * mask


def pool_in_place(hidden, mask):
    hidden[~mask] = 0.0
    return hidden.sum(1) / mask.sum(1, keepdim=True)


def pool_detached(hidden, mask):
    return mean_pool(hidden.detach(), mask)


def test_mean_pool_reference_and_stub():
    _verdict(check_mean_pool(mean_pool), "passed")
    _verdict(check_mean_pool(mean_pool_masked_fill), "passed")
    _verdict(check_mean_pool(_stub), "not implemented")


@pytest.mark.parametrize("fn, hint", [
    (pool_with_padding, "includes the padding"),
    (pool_divide_by_T, "not by the padded length T"),
    (pool_inverted, "the mask is inverted"),
    (pool_sum, "that is the sum"),
    (pool_cls, "[CLS] pooling"),
    (pool_keepdim, "do not keep it"),
    (pool_feature_axis, "time axis (dim 1)"),
    (pool_in_place, "in place"),
])
def test_mean_pool_mistakes(fn, hint):
    _verdict(check_mean_pool(fn), "failed", hint)


def test_mean_pool_detached_fails():
    _verdict(check_mean_pool(pool_detached), "failed")


# --------------------------------------------------------------- encoder block
class EncoderBlockSolution(nn.Module):
    """The exercise's given __init__ plus the reference forward; subclasses below break one thing."""

    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.ffn = FeedForward(d_model, d_ff)
        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)

    def attn_mask(self, x, mask):
        return mask

    def attend(self, h, mask):
        return self.self_attn(h, mask=self.attn_mask(h, mask))[0]

    def sublayer(self, x, f, norm):
        return x + f(norm(x)) if self.norm_first else norm(x + f(x))

    def forward(self, x, mask=None):
        x = self.sublayer(x, lambda h: self.attend(h, mask), self.norm1)
        return self.sublayer(x, self.ffn, self.norm2)


class WithCausalMask(EncoderBlockSolution):
    def attn_mask(self, x, mask):
        causal = causal_mask(x.shape[1])
        return causal if mask is None else mask & causal


class WithIsCausal(EncoderBlockSolution):
    def attend(self, h, mask):
        return self.self_attn(h, mask=mask, is_causal=True)[0]


class IgnoresMask(EncoderBlockSolution):
    def attn_mask(self, x, mask):
        return None


class InvertsMask(EncoderBlockSolution):
    def attn_mask(self, x, mask):
        return None if mask is None else ~mask


class NoResidual(EncoderBlockSolution):
    def sublayer(self, x, f, norm):
        return f(norm(x)) if self.norm_first else norm(f(x))


class AlwaysPostLN(EncoderBlockSolution):
    def sublayer(self, x, f, norm):
        return norm(x + f(x))


class AlwaysPreLN(EncoderBlockSolution):
    def sublayer(self, x, f, norm):
        return x + f(norm(x))


class FFNFirst(EncoderBlockSolution):
    def forward(self, x, mask=None):
        x = self.sublayer(x, self.ffn, self.norm1)
        return self.sublayer(x, lambda h: self.attend(h, mask), self.norm2)


class SharedNorm(EncoderBlockSolution):
    def forward(self, x, mask=None):
        x = self.sublayer(x, lambda h: self.attend(h, mask), self.norm1)
        return self.sublayer(x, self.ffn, self.norm1)


class ForgetsIndex(EncoderBlockSolution):
    def attend(self, h, mask):
        return self.self_attn(h, mask=mask)


class RenamedSubmodule(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ffn = FeedForward(d_model, d_ff)
        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)

    def forward(self, x, mask=None):
        return x


class EncoderBlockStub(EncoderBlockSolution):
    def forward(self, x, mask=None):
        raise NotImplementedError("Self-attention sublayer, then feed-forward sublayer.")


def test_encoder_block_reference_and_stub():
    _verdict(check_encoder_block(EncoderBlockSolution), "passed")
    _verdict(check_encoder_block(EncoderBlockStub), "not implemented")


@pytest.mark.parametrize("cls, hint", [
    (WithCausalMask, "an encoder is bidirectional"),
    (WithIsCausal, "an encoder is bidirectional"),
    (IgnoresMask, "pass mask to the self-attention"),
    (InvertsMask, "the mask is inverted"),
    (NoResidual, "residual connection is missing"),
    (AlwaysPostLN, "with norm_first=True (pre-LN)"),
    (AlwaysPreLN, "with norm_first=False (post-LN"),
    (FFNFirst, "self-attention first"),
    (SharedNorm, "its own LayerNorm"),
    (ForgetsIndex, "take [0]"),
    (RenamedSubmodule, "keep the given __init__"),
])
def test_encoder_block_mistakes(cls, hint):
    _verdict(check_encoder_block(cls), "failed", hint)


def test_encoder_block_instance_instead_of_class():
    _verdict(check_encoder_block(EncoderBlockSolution(16, 4, 32)), "failed", "pass the class")


# -------------------------------------------------------------------- mlm_mask
def mlm_mask(tokens, mask_id, vocab_size, special_ids, p=0.15, generator=None):
    special = torch.tensor(list(special_ids))
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in set(special_ids) | {mask_id}])
    chosen = (torch.rand(tokens.shape, generator=generator) < p) & ~torch.isin(tokens, special)
    action = torch.rand(tokens.shape, generator=generator)
    random_ids = ordinary[torch.randint(len(ordinary), tokens.shape, generator=generator)]
    inputs = tokens.clone()
    inputs[chosen & (action < 0.8)] = mask_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = random_ids[swap]
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    return inputs, labels


def _mlm_variant(**switches):
    """mlm_mask with one mistake switched on."""

    def fn(tokens, mask_id, vocab_size, special_ids, p=0.15, generator=None):
        gen = None if switches.get("no_generator") else generator
        special = torch.tensor(list(special_ids))
        if switches.get("special"):
            special = torch.tensor([-1])
        if switches.get("full_vocab"):
            ordinary = torch.arange(vocab_size)
        else:
            ordinary = torch.tensor([i for i in range(vocab_size) if i not in set(special_ids) | {mask_id}])
        chosen = (torch.rand(tokens.shape, generator=gen) < p) & ~torch.isin(tokens, special)
        action = torch.rand(tokens.shape, generator=gen)
        random_ids = ordinary[torch.randint(len(ordinary), tokens.shape, generator=gen)]
        cut_mask, cut_random = switches.get("split", (0.8, 0.9))
        inputs = tokens if switches.get("in_place") else tokens.clone()
        swap = chosen & (action >= cut_mask) & (action < cut_random)
        inputs[chosen & (action < cut_mask)] = mask_id
        inputs[swap] = random_ids[swap]
        if switches.get("labels") == "everywhere":
            labels = tokens.clone()
        elif switches.get("labels") == "zeros":
            labels = torch.where(chosen, tokens, torch.zeros_like(tokens))
        elif switches.get("labels") == "inputs":
            labels = torch.where(chosen, inputs, torch.full_like(tokens, -100))
        elif switches.get("labels") == "changed_only":
            labels = torch.where(inputs != tokens, tokens, torch.full_like(tokens, -100))
        else:
            labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
        if switches.get("in_place"):
            labels = torch.where(chosen, labels, torch.full_like(tokens, -100))
        return inputs, labels

    return fn


def mlm_fixed_rate_wrong_p(tokens, mask_id, vocab_size, special_ids, p=0.15, generator=None):
    return mlm_mask(tokens, mask_id, vocab_size, special_ids, p=p / 3, generator=generator)


def mlm_returns_inputs_only(tokens, mask_id, vocab_size, special_ids, p=0.15, generator=None):
    return mlm_mask(tokens, mask_id, vocab_size, special_ids, p=p, generator=generator)[0]


def mlm_float_labels(tokens, mask_id, vocab_size, special_ids, p=0.15, generator=None):
    inputs, labels = mlm_mask(tokens, mask_id, vocab_size, special_ids, p=p, generator=generator)
    return inputs, labels.float()


def test_mlm_mask_reference_and_stub():
    _verdict(check_mlm_mask(mlm_mask), "passed")
    _verdict(check_mlm_mask(_mlm_variant()), "passed")
    _verdict(check_mlm_mask(_stub), "not implemented")


def test_tfmlib_mlm_mask_passes_its_own_check():
    from tfmlib.bert import mlm_mask as reference
    _verdict(check_mlm_mask(reference), "passed")


@pytest.mark.parametrize("fn, hint", [
    (_mlm_variant(special=True), "special tokens ([CLS], [SEP], padding, [MASK]) are never chosen"),
    (_mlm_variant(split=(1.0, 1.0)), "you replace every chosen token by [MASK]"),
    (_mlm_variant(split=(0.8, 0.8)), "must become a random ordinary token"),
    (_mlm_variant(split=(0.8, 1.0)), "must stay unchanged"),
    (_mlm_variant(split=(0.1, 0.2)), "split the CHOSEN tokens 80/10/10"),
    (_mlm_variant(labels="everywhere"), "labels must be -100"),
    (_mlm_variant(labels="zeros"), "labels must be -100"),
    (_mlm_variant(labels="inputs"), "the ORIGINAL token"),
    (_mlm_variant(labels="changed_only"), "left unchanged are still predicted"),
    (_mlm_variant(full_vocab=True), "must be ordinary token ids"),
    (_mlm_variant(no_generator=True), "generator argument"),
    (_mlm_variant(in_place=True), "in place"),
    (mlm_fixed_rate_wrong_p, "probability p"),
    (mlm_returns_inputs_only, "pair (inputs, labels)"),
    (mlm_float_labels, "torch.long"),
])
def test_mlm_mask_mistakes(fn, hint):
    _verdict(check_mlm_mask(fn), "failed", hint)
