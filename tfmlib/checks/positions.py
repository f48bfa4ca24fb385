"""Checks for lesson 05, positions.

    check_sinusoidal_encoding(sinusoidal_encoding)   (max_len, d_model) table, interleaved sin/cos
    check_add_positions(add_positions)               token vectors (B, T, C) + table[:T], same width
    check_apply_rope(apply_rope)                     rotary embedding, rotate-half layout, with offset

Each runs the learner's function against tfmlib's reference on random inputs and edge
cases (one position, T = 1, d_model = 2, a width that is not a power of two, a sequence
as long as the table, an offset into the table) and names the usual mistake when the
learner's output equals what that mistake computes.

Shape legend: B batch, T sequence length, C d_model, H heads, hs head size.
"""
from __future__ import annotations

import math

import torch

from ..positions import apply_rope as reference_rope
from ..positions import rope_cache
from ..positions import sinusoidal_encoding as reference_table
from .core import CheckFailed, call, check, expect_close, grad_of

__all__ = ["check_sinusoidal_encoding", "check_add_positions", "check_apply_rope"]

BASE = 10000.0

HINT_SWAPPED = "sine goes in the even features (0, 2, 4, …) and cosine in the odd ones: yours are swapped."
HINT_EXPONENT = ("the exponent is 2i/d_model, where i = 0 … d_model/2 − 1 counts the sin/cos pairs "
                 "(torch.arange(0, d_model, 2) / d_model): you used i/d_model, so the wavelengths grow too slowly.")
HINT_PER_FEATURE = ("features 2i and 2i+1 form one pair and share ONE frequency, 1 / base^(2i/d_model): "
                    "you gave every feature its own frequency.")
HINT_INVERTED = ("divide the position by base^(2i/d_model) (angle = p / base^(2i/d_model)): you multiplied, "
                 "so the frequencies grow instead of shrinking.")
HINT_BLOCKS = ("interleave: sine in the even columns [:, 0::2] and cosine in the odd columns [:, 1::2], "
               "not all sines followed by all cosines.")
HINT_FROM_ONE = "positions start at 0: the first row is sin(0) = 0, cos(0) = 1, … (torch.arange(max_len))."
HINT_CONCAT = ("add the position vectors to the token vectors (+), don't concatenate them: the width must stay "
               "d_model.")
HINT_SLICE = "a sequence of T tokens uses only the first T rows of the table: table[:T]."
HINT_OFFSET_ROWS = "positions start at 0: token t gets row t of the table (table[:T], not table[1:T + 1])."
HINT_LAST_ROWS = "token t gets row t of the table: take the FIRST T rows, table[:T], not the last ones (table[-T:])."
HINT_SCALED = ("only add here: any √d_model scaling belongs to the token embedding, not to the addition "
               "of positions.")
HINT_IN_PLACE = ("don't modify token_vectors in place (+= or .add_()): return a new tensor, e.g. "
                 "token_vectors + table[:T].")
HINT_TOO_LONG = ("a table of max_len rows has no vector for position max_len or beyond: check T against "
                 "table.shape[0] and raise ValueError naming both numbers.")
HINT_FITS = ("a sequence as long as the table (T == max_len) fits: raise the ValueError only when "
             "T > max_len.")
HINT_NO_GRAD = ("gradients must reach the table (a learned table trains through this addition): avoid .detach(), "
                "torch.tensor(...) copies or .data.")
HINT_ROPE_SIGN = ("rotate_half(x) is cat(-x2, x1) with x1, x2 the two halves: the minus goes on the SECOND half. "
                  "Yours rotates by the negative angle.")
HINT_ROPE_PAIRS = ("in this (rotate-half) layout feature j pairs with feature j + hs/2, not with its neighbour "
                   "j + 1: split x into halves x[..., :hs//2] and x[..., hs//2:].")
HINT_ROPE_OFFSET = ("with offset, row t of x sits at position offset + t: use the table rows "
                    "cos[offset:offset + T] and sin[offset:offset + T].")
HINT_ROPE_COS_SIN = "x is multiplied by cos and rotate_half(x) by sin: yours has cos and sin swapped."
HINT_ROPE_SLICE = "x has T positions but the tables have max_len rows: slice them, cos[offset:offset + T]."


# ---------------------------------------------------------------- sinusoidal table
def _sinusoid_variant(max_len: int, d_model: int, mistake: str = "") -> torch.Tensor:
    """The table a typical wrong implementation builds (mistake="" gives the right one)."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None] + (1 if mistake == "from_one" else 0)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)                     # (C/2,)
    if mistake == "exponent":
        two_i = two_i / 2                                                        # i instead of 2i
    if mistake == "per_feature":
        feature = torch.arange(d_model, dtype=torch.float64)                     # (C,)
        angle = position / BASE ** (feature / d_model)                           # (T, C)
        table = torch.where(feature % 2 == 0, torch.sin(angle), torch.cos(angle))
        return table.float()
    scale = BASE ** (two_i / d_model)                                            # (C/2,)
    angle = position * scale if mistake == "inverted" else position / scale      # (T, C/2)
    sin, cos = torch.sin(angle), torch.cos(angle)
    if mistake == "blocks":
        return torch.cat([sin, cos], dim=-1).float()
    if mistake == "swapped":
        sin, cos = cos, sin
    table = torch.stack([sin, cos], dim=-1).reshape(max_len, d_model)            # (T, C/2, 2) -> (T, C)
    return table.float()


def _sinusoid_mistakes(max_len: int, d_model: int) -> dict:
    return {HINT_SWAPPED: _sinusoid_variant(max_len, d_model, "swapped"),
            HINT_EXPONENT: _sinusoid_variant(max_len, d_model, "exponent"),
            HINT_PER_FEATURE: _sinusoid_variant(max_len, d_model, "per_feature"),
            HINT_INVERTED: _sinusoid_variant(max_len, d_model, "inverted"),
            HINT_BLOCKS: _sinusoid_variant(max_len, d_model, "blocks"),
            HINT_FROM_ONE: _sinusoid_variant(max_len, d_model, "from_one")}


@check("sinusoidal_encoding")
def check_sinusoidal_encoding(fn):
    """fn(max_len, d_model) -> (max_len, d_model): PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same)."""
    cases = [(5, 4), (50, 16), (7, 8), (1, 8), (12, 2), (33, 6), (100, 64)]  # small angles first: the
    # mistakes are recognised where float32 rounding of large angles cannot hide them
    for max_len, d_model in cases:
        what = f"sinusoidal_encoding({max_len}, {d_model})"
        out = call(fn, max_len, d_model)
        expect_close(out, reference_table(max_len, d_model), what, mistakes=_sinusoid_mistakes(max_len, d_model),
                     atol=1e-4, rtol=1e-4,
                     hint="compare your first rows with the formula: PE[p, 2i] = sin(p / 10000^(2i/d_model)), "
                          "PE[p, 2i+1] = cos(p / 10000^(2i/d_model)).")
    return len(cases)


# ---------------------------------------------------------------- adding positions
def _call_with_slice_hint(fn, *args, hint: str):
    """call(), but a broadcasting error becomes ``hint`` (the usual cause here: an unsliced table)."""
    try:
        return call(fn, *args)
    except CheckFailed as e:
        if "size of tensor" in e.message or "must match the size" in e.message:
            raise CheckFailed(e.message, hint) from None
        raise


def _add_case(fn, B: int, T: int, C: int, max_len: int) -> None:
    token_vectors, table = torch.randn(B, T, C), torch.randn(max_len, C)
    what = f"token vectors {(B, T, C)} with a table of {max_len} rows"
    original = token_vectors.clone()
    try:
        out = _call_with_slice_hint(fn, token_vectors, table, hint=HINT_SLICE)
    except CheckFailed as e:
        if "raised ValueError" in e.message and T <= max_len:
            raise CheckFailed(e.message, HINT_FITS) from None
        raise
    if isinstance(out, torch.Tensor) and out.shape[:-1] == (B, T) and out.shape[-1] > C:
        raise CheckFailed(f"{what}: expected shape {(B, T, C)}, got {tuple(out.shape)} (wider than the input)",
                          HINT_CONCAT)
    expected = original + table[:T]  # (B, T, C) + (T, C) -> (B, T, C)
    wrong = {HINT_SCALED: original * math.sqrt(C) + table[:T]}
    if T < max_len:
        wrong.update({HINT_OFFSET_ROWS: original + table[1:T + 1], HINT_LAST_ROWS: original + table[-T:]})
    expect_close(out, expected, what, mistakes=wrong)
    if not torch.equal(token_vectors, original):
        raise CheckFailed(f"{what}: your function changed its input token_vectors", HINT_IN_PLACE)


@check("add_positions")
def check_add_positions(fn):
    """fn(token_vectors (B, T, C), table (max_len, C)) -> (B, T, C); ValueError when T > max_len."""
    shapes = [(2, 5, 8, 12), (1, 1, 4, 6), (3, 7, 6, 7), (2, 9, 16, 64)]
    for B, T, C, max_len in shapes:
        _add_case(fn, B, T, C, max_len)
    # gradients reach both the token vectors and a learned table
    token_vectors, table = torch.randn(2, 5, 8), torch.randn(10, 8)
    mine = grad_of(fn, token_vectors, table)
    ref = grad_of(lambda x, t: x + t[:x.shape[1]], token_vectors, table)
    for g_mine, g_ref, name in zip(mine, ref, ("token_vectors", "table")):
        if g_mine is None:
            raise CheckFailed(f"no gradient reaches {name}", HINT_NO_GRAD)
        expect_close(g_mine, g_ref, f"gradient w.r.t. {name}",   # a zero gradient: it was cut off
                     hint=HINT_NO_GRAD if not bool(g_mine.detach().any()) else None)
    # a sequence longer than the table: a clear ValueError, not a silent or cryptic result
    token_vectors, table = torch.randn(2, 9, 8), torch.randn(6, 8)
    try:
        fn(token_vectors, table)
    except ValueError:
        pass
    except Exception as e:  # noqa: BLE001 - turned into feedback
        raise CheckFailed(f"with T = 9 tokens and a table of 6 rows your code raised {type(e).__name__} "
                          f"instead of ValueError", HINT_TOO_LONG) from None
    else:
        raise CheckFailed("with T = 9 tokens and a table of 6 rows your code returned a result instead of "
                          "raising ValueError", HINT_TOO_LONG)
    return len(shapes) + 2


# ---------------------------------------------------------------- RoPE
def _rope_variant(x, cos, sin, offset: int, mistake: str) -> torch.Tensor:
    """What a typical wrong apply_rope returns."""
    T, hs = x.shape[-2], x.shape[-1]
    start = 0 if mistake == "no_offset" else offset
    cos, sin = cos[start:start + T], sin[start:start + T]  # (T, hs)
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]
    if mistake == "sign":
        rotated = torch.cat([x2, -x1], dim=-1)
    elif mistake == "pairs":  # neighbours (x_2j, x_2j+1) as pairs: rotated = (-x_2j+1, x_2j) interleaved
        rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).reshape(x.shape)
    else:
        rotated = torch.cat([-x2, x1], dim=-1)
    if mistake == "cos_sin":
        return x * sin + rotated * cos
    return x * cos + rotated * sin


def _rope_case(fn, shape, max_len: int, offset: int, what: str) -> None:
    hs = shape[-1]
    cos, sin = rope_cache(max_len, hs)
    x = torch.randn(shape)
    expected = reference_rope(x, cos, sin, offset=offset)
    out = _call_with_slice_hint(fn, x.clone(), cos.clone(), sin.clone(), offset, hint=HINT_ROPE_SLICE)
    mistakes = {HINT_ROPE_SIGN: _rope_variant(x, cos, sin, offset, "sign"),
                HINT_ROPE_COS_SIN: _rope_variant(x, cos, sin, offset, "cos_sin")}
    if hs > 2:  # with hs = 2 both layouts pair the same two features
        mistakes[HINT_ROPE_PAIRS] = _rope_variant(x, cos, sin, offset, "pairs")
    if offset:
        mistakes[HINT_ROPE_OFFSET] = _rope_variant(x, cos, sin, offset, "no_offset")
    expect_close(out, expected, what, mistakes=mistakes)


@check("apply_rope")
def check_apply_rope(fn):
    """fn(x (..., T, hs), cos (max_len, hs), sin (max_len, hs), offset) -> rotated x, same shape."""
    cases = [((2, 3, 5, 8), 16, 0, "x of shape (B=2, H=3, T=5, hs=8), offset 0"),
             ((1, 1, 1, 4), 8, 0, "a batch of one with T = 1"),
             ((4, 2), 4, 0, "x of shape (T=4, hs=2), the smallest head size"),
             ((2, 2, 3, 8), 16, 6, "x (2, 2, T=3, 8) at offset 6 (positions 6, 7, 8, as with a KV cache)"),
             ((1, 2, 1, 16), 32, 17, "one new token (T = 1) at offset 17"),
             ((2, 16, 12), 16, 0, "x (2, T=16, hs=12): T equal to the table's length")]
    for shape, max_len, offset, what in cases:
        _rope_case(fn, shape, max_len, offset, what)
    cos, sin = rope_cache(16, 8)
    x = torch.randn(2, 6, 8)
    (g_mine,) = grad_of(lambda t: fn(t, cos, sin, 3), x)
    (g_ref,) = grad_of(lambda t: reference_rope(t, cos, sin, offset=3), x)
    if g_mine is None:
        raise CheckFailed("no gradient reaches x", "avoid .detach(), .item() or copying x into a new tensor.")
    expect_close(g_mine, g_ref, "gradient w.r.t. x at offset 3")
    return len(cases) + 1
