"""Checks for lesson 07 (the encoder).

    check_padding_mask(padding_mask)    padding_mask(tokens (B, T), pad_id=0) -> (B, 1, 1, T) bool
    check_mean_pool(mean_pool)          mean_pool(hidden (B, T, C), mask (B, T) bool) -> (B, C)
    check_encoder_block(MyEncoderBlock) the class; forward(x (B, T, C), mask=None) -> (B, T, C),
                                        pre-LN (norm_first=True) and post-LN (norm_first=False)
    check_mlm_mask(mlm_mask)            mlm_mask(tokens, mask_id, vocab_size, special_ids, p=0.15,
                                        generator=None) -> (inputs, labels), BERT's 80/10/10 rule

The first three compare with tfmlib's references (tfmlib.masks.padding_mask, tfmlib.bert.mean_pool,
tfmlib.EncoderBlock). The masking rule is random, so its check tests what must always hold
(special tokens untouched, labels -100 where nothing is predicted, the input left alone, the
generator used) and measures the proportions on ~50,000 tokens.

Shape legend: B batch, T sequence length, C d_model, H heads.
Masks: bool, True = real token / may attend.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from ..bert import IGNORE_INDEX, mean_pool as _reference_mean_pool
from ..encoder import EncoderBlock
from ..masks import causal_mask, padding_mask as _reference_padding_mask
from .core import (CheckFailed, call, check, copy_reference_weights, expect_close,
                   expect_shape, expect_tensor, grad_of, vary_norms)

__all__ = ["check_padding_mask", "check_mean_pool", "check_encoder_block", "check_mlm_mask"]


def _compare(actual, expected: torch.Tensor, what: str, mistakes: list, shape_hint: str | None = None) -> None:
    expect_close(actual, expected, what, mistakes, shape_hint=shape_hint)


def _real(lengths: list[int], T: int) -> torch.Tensor:
    """(B, T) bool: True for the first lengths[b] positions of row b (right padding)."""
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)


MASK_INVERTED = ("the mask is inverted: True means 'real token, may be attended to', False marks padding "
                 "(tokens != pad_id).")


# ---------------------------------------------------------------- padding_mask
PAD_SHAPE = ("return shape (B, 1, 1, T): one axis for the heads and one for the query positions, so that the "
             "mask broadcasts over the scores (B, H, T_q, T_k) along the KEY axis (the last one).")
PAD_DTYPE = "return a boolean tensor (tokens != pad_id is already bool); no float -inf masks here."
PAD_ID = "compare with the pad_id argument, not with a fixed 0."


@check("padding_mask")
def check_padding_mask(fn) -> int:
    cases = [  # (what, tokens, pad_id)
        ("a (2, 5) batch with padding", torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]]), 0),
        ("a batch of one with T = 1", torch.tensor([[7]]), 0),
        ("rows with all but one token padded", torch.tensor([[9, 0, 0, 0], [4, 5, 6, 7], [6, 0, 0, 0]]), 0),
        ("pad_id=3", torch.tensor([[5, 4, 3, 3], [0, 1, 2, 3]]), 3),
    ]
    for what, tokens, pad_id in cases:
        before = tokens.clone()
        out = expect_tensor(call(fn, tokens, pad_id), f"mask for {what}")
        if not torch.equal(tokens, before):
            raise CheckFailed(f"on {what}: your function changed its input tokens", "build a new tensor.")
        expected = _reference_padding_mask(before, pad_id)
        B, T = before.shape
        if tuple(out.shape) != (B, 1, 1, T):
            raise CheckFailed(f"mask for {what}: expected shape {(B, 1, 1, T)}, got {tuple(out.shape)}", PAD_SHAPE)
        if out.dtype != torch.bool:
            raise CheckFailed(f"mask for {what}: expected dtype torch.bool, got {out.dtype}", PAD_DTYPE)
        mistakes = [(MASK_INVERTED, ~expected), (PAD_ID, (before != 0)[:, None, None, :])]
        _compare(out.float(), expected.float(), f"mask for {what}", [(h, w.float()) for h, w in mistakes])
    return len(cases)


# ------------------------------------------------------------------- mean_pool
POOL_SHAPE = "return one vector per sequence, shape (B, C): average over the time axis (dim 1) and do not keep it."
POOL_PADDING = ("your average includes the padding: multiply by the mask (or zero the padded vectors) and "
                "divide by the number of REAL tokens in each row.")
POOL_DIVIDE_T = "divide by the number of real tokens in each row (mask.sum(1)), not by the padded length T."
POOL_SUM = "that is the sum: divide by the number of real tokens to get the mean."
POOL_CLS = "that is [CLS] pooling (the first position's vector): here average over all real tokens."
POOL_MAX = "that is max pooling: here take the mean over the real tokens."
POOL_AXIS = "average over the time axis (dim 1) of hidden (B, T, C), one mean per feature."


@check("mean_pool")
def check_mean_pool(fn) -> int:
    C = 8
    cases = [  # (what, B, T, lengths)
        ("B=3, T=6 with lengths 6, 3, 2", 3, 6, [6, 3, 2]),
        ("a batch of one with T = 1", 1, 1, [1]),
        ("rows with all but one token padded", 2, 5, [1, 5]),
        ("no padding", 2, 4, [4, 4]),
    ]
    for what, B, T, lengths in cases:
        mask = _real(lengths, T)                                  # (B, T)
        hidden = torch.randn(B, T, C) + 4.0 * (~mask)[..., None]  # padded vectors far from the real ones
        before = hidden.clone()
        out = expect_tensor(call(fn, hidden, mask), f"pooled vectors for {what}")
        if not torch.equal(hidden, before) or not torch.equal(mask, _real(lengths, T)):
            raise CheckFailed(f"on {what}: your function changed its inputs in place",
                              "do not modify hidden or mask in place: compute new tensors (hidden * weights).")
        expected = _reference_mean_pool(before, mask)
        w = mask.float()[..., None]                                # (B, T, 1)
        mistakes = [(POOL_PADDING, before.mean(1)),
                    (POOL_DIVIDE_T, (before * w).sum(1) / T),
                    (MASK_INVERTED, (before * (1 - w)).sum(1) / (1 - w).sum(1)),
                    (MASK_INVERTED, (before * (1 - w)).sum(1) / (1 - w).sum(1).clamp(min=1)),
                    (POOL_SUM, (before * w).sum(1)),
                    (POOL_CLS, before[:, 0]),
                    (POOL_MAX, before.masked_fill(~mask[..., None], float("-inf")).max(1).values)]
        shape_hint = POOL_SHAPE
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, T):
            shape_hint = POOL_AXIS
        _compare(out, expected, f"pooled vectors for {what}", mistakes, shape_hint=shape_hint)
    # the gradient reaches every real token equally and no padded one
    mask = _real([5, 2], 5)
    hidden = torch.randn(2, 5, C)
    (got,), (want,) = grad_of(lambda h: fn(h, mask), hidden), grad_of(lambda h: _reference_mean_pool(h, mask), hidden)
    if got is None:
        raise CheckFailed("no gradient reaches hidden", "keep the computation differentiable: no .detach() or .item().")
    expect_close(got, want, "gradient with respect to hidden (B=2, T=5, lengths 5, 2)")
    return len(cases) + 1


# --------------------------------------------------------------- encoder block

NO_CAUSAL_HERE = ("an encoder is bidirectional: do not add a causal mask (is_causal / causal_mask). Every "
                  "position may attend to every real position, later ones included.")
MASK_IGNORED = "pass mask to the self-attention (self.self_attn(h, mask=mask)) so that padded keys get weight 0."
NO_RESIDUAL = "a residual connection is missing: each sublayer adds its input back (x + sublayer(...))."
PRE_NOT_POST = ("norm in the wrong place: with norm_first=False (post-LN, the 2017 paper) normalise AFTER the "
                "residual add: x = norm(x + f(x)).")
POST_NOT_PRE = ("norm in the wrong place: with norm_first=True (pre-LN) normalise the sublayer's input and add "
                "the raw x back: x = x + f(norm(x)).")
ORDER = "the order is self-attention first, then the feed-forward network."
SHARED_NORM = "each sublayer has its own LayerNorm: norm1 for self-attention, norm2 for the feed-forward network."
TUPLE = "self.self_attn(...) returns a pair (output, weights): take [0] before adding it to x."
BLOCK_SHAPE = "an encoder block keeps the shape: x (B, T, C) -> (B, T, C)."


def _reference_block(d_model: int, n_heads: int, d_ff: int, norm_first: bool) -> EncoderBlock:
    ref = EncoderBlock(d_model, n_heads, d_ff, dropout=0.0, norm_first=norm_first).eval()
    vary_norms(ref.attn_sublayer.norm, ref.ffn_sublayer.norm)
    return ref


def _load_into(block: nn.Module, ref: EncoderBlock) -> None:
    copy_reference_weights(block, {"self_attn": ref.self_attn, "ffn": ref.ffn, "norm1": ref.attn_sublayer.norm,
                                   "norm2": ref.ffn_sublayer.norm},
                           "keep the given __init__ (self_attn, ffn, norm1, norm2).")


def _wrong_block(ref: EncoderBlock, x, mask=None, *, norm_first: bool, causal=False, use_mask=True,
                 invert_mask=False, residual=("attn", "ffn"), ffn_first=False, shared_norm=False):
    """The encoder block written out, with switches that reproduce the usual mistakes."""
    norms = {"attn": ref.attn_sublayer.norm, "ffn": ref.ffn_sublayer.norm}
    if shared_norm:
        norms["ffn"] = norms["attn"]
    attn_mask = mask if use_mask else None
    if attn_mask is not None and invert_mask:
        attn_mask = ~attn_mask
    if causal:
        c = causal_mask(x.shape[1])
        attn_mask = c if attn_mask is None else attn_mask & c

    def f_attn(h):
        return ref.self_attn(h, mask=attn_mask)[0]

    def sublayer(name, x, f):
        if norm_first:
            out = f(norms[name](x))
            return x + out if name in residual else out
        return norms[name](x + f(x) if name in residual else f(x))

    if ffn_first:  # with each norm kept by its sublayer, or taken in the order of use
        if ffn_first == "norms_in_order":
            norms = {"ffn": norms["attn"], "attn": norms["ffn"]}
        steps = [("ffn", ref.ffn), ("attn", f_attn)]
    else:
        steps = [("attn", f_attn), ("ffn", ref.ffn)]
    for name, f in steps:
        x = sublayer(name, x, f)
    return x


def _call_block(block, x, mask, what):
    try:
        return call(block, x, mask=mask)
    except CheckFailed as e:
        if "tuple" in e.message:
            raise CheckFailed(f"{what}: {e.message}", TUPLE) from None
        raise


@check("encoder_block")
def check_encoder_block(cls) -> int:
    if isinstance(cls, nn.Module) or not callable(cls):
        raise CheckFailed(f"expected the class itself, got {type(cls).__name__}",
                          "pass the class, e.g. check_encoder_block(MyEncoderBlock), not an instance.")
    C, H, FF = 16, 4, 32
    cases = [  # (what, B, T, lengths or None)
        ("B=2, T=5", 2, 5, None),
        ("B=3, T=6 with padding (lengths 6, 4, 2)", 3, 6, [6, 4, 2]),
        ("a batch of one with T = 1", 1, 1, None),
        ("all but one token padded (lengths 1, 5)", 2, 5, [1, 5]),
    ]
    n = 0
    for norm_first in (True, False):
        label = "pre-LN" if norm_first else "post-LN"
        ref = _reference_block(C, H, FF, norm_first)
        block = call(cls, C, H, FF, norm_first=norm_first)
        if not isinstance(block, nn.Module):
            raise CheckFailed(f"{cls.__name__}(...) did not build an nn.Module", "subclass nn.Module.")
        _load_into(block, ref)
        block.eval()
        for what, B, T, lengths in cases:
            what = f"output ({label}, {what})"
            x = torch.randn(B, T, C)
            mask = None if lengths is None else _real(lengths, T)[:, None, None, :]  # (B, 1, 1, T)
            expected = ref(x, mask=mask)
            out = _call_block(block, x, mask, what)
            args, nf = (ref, x, mask), dict(norm_first=norm_first)
            mistakes = [(NO_CAUSAL_HERE, partial(_wrong_block, *args, **nf, causal=True)),
                        (NO_CAUSAL_HERE, partial(_wrong_block, *args, **nf, causal=True, use_mask=False)),
                        (PRE_NOT_POST if not norm_first else POST_NOT_PRE,
                         partial(_wrong_block, *args, norm_first=not norm_first)),
                        (ORDER, partial(_wrong_block, *args, **nf, ffn_first=True)),
                        (ORDER, partial(_wrong_block, *args, **nf, ffn_first="norms_in_order")),
                        (SHARED_NORM, partial(_wrong_block, *args, **nf, shared_norm=True))]
            mistakes += [(NO_RESIDUAL, partial(_wrong_block, *args, **nf, residual=keep))
                         for keep in ((), ("attn",), ("ffn",))]
            if mask is not None:
                mistakes += [(MASK_IGNORED, partial(_wrong_block, *args, **nf, use_mask=False)),
                             (MASK_INVERTED, partial(_wrong_block, *args, **nf, invert_mask=True))]
            _compare(out, expected, what, mistakes, shape_hint=BLOCK_SHAPE)
            n += 1
        x = torch.randn(2, 4, C)
        (got,), (want,) = grad_of(lambda h: block(h), x), grad_of(ref, x)
        if got is None:
            raise CheckFailed(f"{label}: no gradient reaches x", "keep the computation differentiable.")
        expect_close(got, want, f"{label}: gradient with respect to x")
        n += 1
    return n


# -------------------------------------------------------------------- mlm_mask
MLM_TUPLE = "return a pair (inputs, labels), both shaped like tokens."
MLM_DTYPE = "inputs and labels are token ids: keep dtype torch.long (torch.where / clone keep it)."
MLM_INPLACE = "do not modify tokens in place: start from tokens.clone() (the originals become the labels)."
MLM_SPECIAL = ("special tokens ([CLS], [SEP], padding, [MASK]) are never chosen: leave them unchanged and give "
               "them label -100. Choose only among positions whose id is not in special_ids.")
MLM_LABELS_IGNORE = ("labels must be -100 (ignored by the loss) at every position that is NOT chosen for "
                     "prediction; only the ~15% chosen positions keep their original id.")
MLM_LABELS_ORIGINAL = ("at a chosen position the label is the ORIGINAL token (tokens), not the corrupted input: "
                       "the model must recover what was there.")
MLM_UNLABELLED_CHANGE = ("every position whose input you changed must be predicted: give it its original token "
                         "as label.")
MLM_KEEP_UNLABELLED = ("the 10% of chosen tokens left unchanged are still predicted: label them with their "
                       "original token too (choose 15%, then split the chosen ones 80/10/10).")
MLM_RATE = "choose each ordinary token with probability p (torch.rand(...) < p), among non-special positions."
MLM_ALL_MASK = ("you replace every chosen token by [MASK]: BERT uses 80% [MASK], 10% a random token, 10% "
                "unchanged, so that the model cannot rely on seeing [MASK] (it never does at fine-tuning).")
MLM_NO_RANDOM = "10% of the chosen tokens must become a random ordinary token (not [MASK], usually not themselves)."
MLM_NO_KEEP = "10% of the chosen tokens must stay unchanged (their label is still the original token)."
MLM_SPLIT = ("split the CHOSEN tokens 80/10/10: draw one uniform number per position, < 0.8 -> [MASK], "
             "0.8-0.9 -> random ordinary token, >= 0.9 -> unchanged.")
MLM_RANDOM_IDS = ("random replacements must be ordinary token ids: in [0, vocab_size) and not special "
                  "(pick from the ids that are not in special_ids).")
MLM_GENERATOR = ("draw every random number from the generator argument (torch.rand(shape, generator=generator), "
                 "torch.randint(..., generator=generator)) so that a seeded generator gives the same masks.")


def _mlm_outputs(fn, tokens, what, *args, **kwargs):
    before = tokens.clone()
    out = call(fn, tokens, *args, **kwargs)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed(f"{what}: expected a pair (inputs, labels), got {type(out).__name__}", MLM_TUPLE)
    if not torch.equal(tokens, before):
        raise CheckFailed(f"{what}: your function changed tokens in place", MLM_INPLACE)
    inputs = expect_shape(out[0], tokens.shape, f"inputs for {what}", MLM_TUPLE)
    labels = expect_shape(out[1], tokens.shape, f"labels for {what}", MLM_TUPLE)
    for name, t in (("inputs", inputs), ("labels", labels)):
        if t.dtype != torch.long:
            raise CheckFailed(f"{name} for {what}: expected dtype torch.long, got {t.dtype}", MLM_DTYPE)
    return inputs, labels


def _mlm_invariants(tokens, inputs, labels, special, what):
    """What holds for every draw: specials untouched, labels = original or -100, changes are labelled."""
    is_special = torch.isin(tokens, special)
    labelled = labels != IGNORE_INDEX
    if (inputs != tokens)[is_special].any():
        raise CheckFailed(f"{what}: special tokens were changed", MLM_SPECIAL)
    if labelled.all() and tokens.numel() > 1:
        raise CheckFailed(f"{what}: no label is -100", MLM_LABELS_IGNORE)
    if (labelled & is_special).any():
        raise CheckFailed(f"{what}: special tokens were chosen for prediction (label != -100)", MLM_SPECIAL)
    if (labelled & (labels != tokens)).any():
        wrong = labelled & (labels != tokens)
        if torch.equal(labels[wrong], inputs[wrong]):
            raise CheckFailed(f"{what}: some labels are not the original tokens", MLM_LABELS_ORIGINAL)
        raise CheckFailed(f"{what}: labels hold values that are neither -100 nor the original token",
                          MLM_LABELS_IGNORE)
    if ((inputs != tokens) & ~labelled).any():
        raise CheckFailed(f"{what}: some changed inputs have label -100", MLM_UNLABELLED_CHANGE)


def _bert_batch(gen: torch.Generator, B: int, T: int, vocab_size: int) -> torch.Tensor:
    """[CLS]=1 text [SEP]=2 then padding 0, text ids in [5, vocab_size)."""
    tokens = torch.randint(5, vocab_size, (B, T), generator=gen)
    lengths = torch.randint(T // 3, T + 1, (B,), generator=gen)        # real length incl. [CLS] and [SEP]
    pos = torch.arange(T)[None, :]
    tokens[:, 0] = 1
    tokens = torch.where(pos == (lengths[:, None] - 1), torch.full_like(tokens, 2), tokens)
    return torch.where(pos >= lengths[:, None], torch.zeros_like(tokens), tokens)


@check("mlm_mask")
def check_mlm_mask(fn) -> int:
    mask_id, vocab_size, special_ids = 4, 1000, [0, 1, 2, 3, 4]
    special = torch.tensor(special_ids)
    n = 0
    # edge cases with certain outcomes
    edge = [  # (what, tokens, p)
        ("a batch of one with T = 1, p=1", torch.tensor([[57]]), 1.0),
        ("all but one token padded, p=1", torch.tensor([[1, 88, 2, 0, 0, 0], [1, 0, 0, 0, 0, 0]]), 1.0),
        ("p=0", torch.tensor([[1, 11, 12, 13, 2, 0]]), 0.0),
    ]
    for what, tokens, p in edge:
        gen = torch.Generator().manual_seed(n)
        inputs, labels = _mlm_outputs(fn, tokens, what, mask_id, vocab_size, special_ids, p=p, generator=gen)
        _mlm_invariants(tokens, inputs, labels, special, what)
        chosen_expected = ~torch.isin(tokens, special) if p == 1.0 else torch.zeros_like(tokens, dtype=torch.bool)
        if not torch.equal(labels != IGNORE_INDEX, chosen_expected):
            raise CheckFailed(f"{what}: expected {int(chosen_expected.sum())} chosen position(s) (label != -100), "
                              f"got {int((labels != IGNORE_INDEX).sum())}",
                              MLM_RATE if p == 1.0 else MLM_LABELS_IGNORE)
        n += 1
    # the generator decides everything: same seed, same result; another seed, another result
    gen = torch.Generator().manual_seed(123)
    tokens = _bert_batch(gen, 400, 128, vocab_size)                  # ~50,000 ordinary tokens
    what = "a (400, 128) batch, p=0.15"
    first = _mlm_outputs(fn, tokens, what, mask_id, vocab_size, special_ids, p=0.15,
                         generator=torch.Generator().manual_seed(7))
    torch.rand(100)  # move the global RNG on: a draw that ignores the generator now differs
    second = _mlm_outputs(fn, tokens, what, mask_id, vocab_size, special_ids, p=0.15,
                          generator=torch.Generator().manual_seed(7))
    if not (torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])):
        raise CheckFailed("two calls with generators seeded alike gave different results", MLM_GENERATOR)
    inputs, labels = first
    _mlm_invariants(tokens, inputs, labels, special, what)
    candidates = ~torch.isin(tokens, special)
    chosen = labels != IGNORE_INDEX
    rate = chosen.sum().item() / candidates.sum().item()
    if abs(rate - 0.15 * 0.9) < 0.006 and abs(rate - 0.15) > 0.01:
        raise CheckFailed(f"{what}: {rate:.1%} of the ordinary tokens are labelled, expected about 15%",
                          MLM_KEEP_UNLABELLED)
    if abs(rate - 0.15) > 0.01:
        raise CheckFailed(f"{what}: {rate:.1%} of the ordinary tokens are chosen, expected about 15%", MLM_RATE)
    n += 1
    masked = (inputs == mask_id) & chosen
    kept = (inputs == tokens) & chosen
    replaced = chosen & ~masked & ~kept
    n_chosen = chosen.sum().item()
    share = {name: t.sum().item() / n_chosen for name, t in (("mask", masked), ("random", replaced), ("kept", kept))}
    seen = ", ".join(f"{k} {v:.1%}" for k, v in share.items())
    if share["mask"] > 0.95:
        raise CheckFailed(f"{what}: of the chosen tokens: {seen}; expected mask 80%, random 10%, kept 10%",
                          MLM_ALL_MASK)
    if abs(share["mask"] - 0.8) > 0.02 or abs(share["random"] - 0.1) > 0.02 or abs(share["kept"] - 0.1) > 0.02:
        hint = MLM_NO_RANDOM if share["random"] < 0.02 else MLM_NO_KEEP if share["kept"] < 0.02 else MLM_SPLIT
        raise CheckFailed(f"{what}: of the chosen tokens: {seen}; expected mask 80%, random 10%, kept 10%", hint)
    new_ids = inputs[replaced]
    if ((new_ids < 0) | (new_ids >= vocab_size)).any() or torch.isin(new_ids, special).any():
        raise CheckFailed(f"{what}: some random replacements are special or out-of-range ids", MLM_RANDOM_IDS)
    if new_ids.unique().numel() < 100:
        raise CheckFailed(f"{what}: the random replacements take only {new_ids.unique().numel()} different ids",
                          MLM_RANDOM_IDS)
    n += 1
    other = _mlm_outputs(fn, tokens, what, mask_id, vocab_size, special_ids, p=0.15,
                         generator=torch.Generator().manual_seed(8))
    if torch.equal(other[1], labels):
        raise CheckFailed("generators with different seeds gave the same masks", MLM_GENERATOR)
    return n + 1
