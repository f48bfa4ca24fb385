"""The lesson-05 checks accept the reference, reject realistic wrong implementations with the
right hint, and report a stub as "not implemented"."""
import math

import pytest
import torch

from helpers import stub
from tfmlib.checks import positions as checks
from tfmlib.positions import apply_rope as tfm_apply_rope
from tfmlib.positions import sinusoidal_encoding as tfm_sinusoidal


# ---------------------------------------------------------------- sinusoidal table
def table_ok(max_len, d_model):  # the exp/log form, as many tutorials write it
    position = torch.arange(max_len).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def make_table(swap=False, exponent="2i", invert=False, blocks=False, start=0, per_feature=False):
    def table(max_len, d_model):
        position = torch.arange(start, start + max_len, dtype=torch.float32)[:, None]  # (T, 1)
        if per_feature:  # one frequency per feature j, not per pair
            j = torch.arange(d_model, dtype=torch.float32)
            angle = position / 10000.0 ** (j / d_model)
            pe = torch.empty(max_len, d_model)
            pe[:, 0::2], pe[:, 1::2] = torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])
            return pe
        i = torch.arange(d_model // 2, dtype=torch.float32)
        power = (2 * i if exponent == "2i" else i) / d_model
        angle = position * 10000.0 ** power if invert else position / 10000.0 ** power  # (T, C/2)
        if blocks:
            return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
        pe = torch.zeros(max_len, d_model)
        first, second = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
        pe[:, 0::2], pe[:, 1::2] = first(angle), second(angle)
        return pe
    return table


def table_transposed(max_len, d_model):
    return tfm_sinusoidal(max_len, d_model).T


TABLE_WRONG = [
    (make_table(swap=True), checks.HINT_SWAPPED),
    (make_table(exponent="i"), checks.HINT_EXPONENT),
    (make_table(per_feature=True), checks.HINT_PER_FEATURE),
    (make_table(invert=True), checks.HINT_INVERTED),
    (make_table(blocks=True), checks.HINT_BLOCKS),
    (make_table(start=1), checks.HINT_FROM_ONE),
    (table_transposed, "transpose"),
]


# ---------------------------------------------------------------- adding positions
def add_ok(token_vectors, table):
    T = token_vectors.shape[1]
    if T > table.shape[0]:
        raise ValueError(f"sequence length {T} exceeds the table's {table.shape[0]} rows")
    return token_vectors + table[:T]


def add_concat(token_vectors, table):
    B, T, C = token_vectors.shape
    if T > table.shape[0]:
        raise ValueError("too long")
    return torch.cat([token_vectors, table[:T].expand(B, T, C)], dim=-1)


def add_whole_table(token_vectors, table):
    if token_vectors.shape[1] > table.shape[0]:
        raise ValueError("too long")
    return token_vectors + table


def add_from_one(token_vectors, table):
    T = token_vectors.shape[1]
    if T > table.shape[0]:
        raise ValueError("too long")
    return token_vectors + table[1:T + 1]


def add_last_rows(token_vectors, table):
    T = token_vectors.shape[1]
    if T > table.shape[0]:
        raise ValueError("too long")
    return token_vectors + table[-T:]


def add_scaled(token_vectors, table):
    T, C = token_vectors.shape[1:]
    if T > table.shape[0]:
        raise ValueError("too long")
    return token_vectors * math.sqrt(C) + table[:T]


def add_in_place(token_vectors, table):
    T = token_vectors.shape[1]
    if T > table.shape[0]:
        raise ValueError("too long")
    token_vectors += table[:T]
    return token_vectors


def add_detached(token_vectors, table):
    T = token_vectors.shape[1]
    if T > table.shape[0]:
        raise ValueError("too long")
    return token_vectors + table[:T].detach()


def add_off_by_one_length_check(token_vectors, table):
    T = token_vectors.shape[1]
    if T >= table.shape[0]:
        raise ValueError(f"sequence length {T} does not fit the table's {table.shape[0]} rows")
    return token_vectors + table[:T]


def add_no_length_check(token_vectors, table):
    return token_vectors + table[:token_vectors.shape[1]]


def add_index_error(token_vectors, table):
    T = token_vectors.shape[1]
    return token_vectors + torch.stack([table[t] for t in range(T)])  # IndexError past the table


ADD_WRONG = [
    (add_concat, checks.HINT_CONCAT),
    (add_whole_table, checks.HINT_SLICE),
    (add_from_one, checks.HINT_OFFSET_ROWS),
    (add_last_rows, checks.HINT_LAST_ROWS),
    (add_scaled, checks.HINT_SCALED),
    (add_in_place, checks.HINT_IN_PLACE),
    (add_detached, checks.HINT_NO_GRAD),
    (add_off_by_one_length_check, checks.HINT_FITS),
    (add_no_length_check, checks.HINT_TOO_LONG),
    (add_index_error, checks.HINT_TOO_LONG),
]


# ---------------------------------------------------------------- RoPE
def rope_ok(x, cos, sin, offset=0):
    T, half = x.shape[-2], x.shape[-1] // 2
    cos, sin = cos[offset:offset + T], sin[offset:offset + T]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos[:, :half] - x2 * sin[:, :half], x2 * cos[:, half:] + x1 * sin[:, half:]], dim=-1)


def make_rope(sign_wrong=False, neighbours=False, ignore_offset=False, swap_cos_sin=False, no_slice=False):
    def rope(x, cos, sin, offset=0):
        T, hs = x.shape[-2], x.shape[-1]
        start = 0 if ignore_offset else offset
        if not no_slice:
            cos, sin = cos[start:start + T], sin[start:start + T]
        x1, x2 = x[..., :hs // 2], x[..., hs // 2:]
        if neighbours:
            rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
        elif sign_wrong:
            rotated = torch.cat([x2, -x1], dim=-1)
        else:
            rotated = torch.cat([-x2, x1], dim=-1)
        if swap_cos_sin:
            return x * sin + rotated * cos
        return x * cos + rotated * sin
    return rope


def rope_detached(x, cos, sin, offset=0):
    return tfm_apply_rope(x.detach(), cos, sin, offset)


ROPE_WRONG = [
    (make_rope(sign_wrong=True), checks.HINT_ROPE_SIGN),
    (make_rope(neighbours=True), checks.HINT_ROPE_PAIRS),
    (make_rope(ignore_offset=True), checks.HINT_ROPE_OFFSET),
    (make_rope(swap_cos_sin=True), checks.HINT_ROPE_COS_SIN),
    (make_rope(no_slice=True), checks.HINT_ROPE_SLICE),
    (rope_detached, "avoid .detach()"),
]


CHECKS = [
    (checks.check_sinusoidal_encoding, table_ok, TABLE_WRONG),
    (checks.check_add_positions, add_ok, ADD_WRONG),
    (checks.check_apply_rope, rope_ok, ROPE_WRONG),
]
ALL_WRONG = [(check_fn, fn, hint) for check_fn, _, wrong in CHECKS for fn, hint in wrong]


@pytest.mark.parametrize("check_fn, solution", [(c, s) for c, s, _ in CHECKS], ids=lambda x: getattr(x, "__name__", ""))
def test_reference_solution_passes(check_fn, solution):
    result = check_fn(solution)
    assert result.passed, repr(result)
    assert repr(result).startswith("✅") and "passed (" in repr(result)


def test_tfmlib_references_pass():
    assert checks.check_sinusoidal_encoding(tfm_sinusoidal).passed
    assert checks.check_apply_rope(tfm_apply_rope).passed


@pytest.mark.parametrize("check_fn", [c for c, _, _ in CHECKS], ids=lambda c: c.__name__)
def test_stub_is_not_implemented(check_fn):
    result = check_fn(stub)
    assert result.status == "not implemented", repr(result)
    assert "not implemented yet" in repr(result)


@pytest.mark.parametrize("check_fn, wrong, hint", ALL_WRONG,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(ALL_WRONG)])
def test_wrong_implementation_fails_with_hint(check_fn, wrong, hint):
    result = check_fn(wrong)
    text = repr(result)
    assert result.status == "failed", text
    assert text.startswith("❌")
    assert "Traceback" not in text
    assert result.hint is not None and hint in result.hint, text


def test_every_check_has_three_hinted_mistakes():
    for check_fn, _, wrong in CHECKS:
        assert sum(hint is not None for _, hint in wrong) >= 3, check_fn.__name__


def test_wrong_return_type_is_reported_not_raised():
    result = checks.check_sinusoidal_encoding(lambda max_len, d_model: tfm_sinusoidal(max_len, d_model).tolist())
    assert result.status == "failed" and "torch.Tensor" in repr(result)
    result = checks.check_apply_rope(lambda x, cos, sin, offset=0: 1 / 0)
    assert result.status == "failed" and "ZeroDivisionError" in repr(result)


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_apply_rope(tfm_apply_rope)
    checks.check_add_positions(add_ok)
    assert torch.equal(torch.rand(3), expected)
