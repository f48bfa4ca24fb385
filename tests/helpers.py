import torch


def assert_close(actual, expected, atol=1e-5, rtol=1e-5, what="tensor"):
    """Shapes equal and values within float32 tolerance."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def assert_grads_close(mine, ref, pairs, atol=1e-5, rtol=1e-4):
    """Compare the gradients of named parameter pairs [(mine_tensor, ref_tensor, name), ...]."""
    for a, b, name in pairs:
        assert a.grad is not None and b.grad is not None, f"{name}: no gradient"
        assert_close(a.grad, b.grad, atol=atol, rtol=rtol, what=f"grad of {name}")


# ---------------------------------------------------------------- learner-style code for the check tests
def stub(*args, **kwargs):
    """An exercise stub, as tools/make_exercises.py writes it."""
    raise NotImplementedError("write your code here")


def assert_passes(result):
    assert result.status == "passed", repr(result)


def assert_fails(result, hint_text=None):
    """The check failed, without a traceback, and its message or hint contains ``hint_text``."""
    assert result.status == "failed", repr(result)
    assert "Traceback" not in repr(result)
    if hint_text is not None:
        assert hint_text in repr(result), f"expected {hint_text!r} in:\n{result!r}"


def verdict(result, status, hint=None, in_hint=False):
    """The check ended with ``status``, without a traceback; ``hint`` is in the hint (in_hint=True)
    or anywhere in the verdict."""
    assert result.status == status, repr(result)
    if hint is not None:
        where = result.hint or "" if in_hint else repr(result)
        assert hint in where, repr(result)
    assert "Traceback" not in repr(result)


def learner_attention(q, k, v, mask=None, *, scale="sqrt", kq=False, mask_mode="fill", axis=-1):
    """Attention as a learner writes it, with switches for the usual mistakes (defaults: right).

    scale "sqrt" | "none" | "d_k" | "T"; kq: K Q^T instead of Q K^T; mask_mode "fill" (-inf before the
    softmax) | "after" (zero the weights after it) | "zero" (fill 0, not -inf) | "inverted" | "ignore".
    """
    d_k, T = q.shape[-1], q.shape[-2]
    divisor = {"sqrt": d_k ** 0.5, "none": 1.0, "d_k": float(d_k), "T": T ** 0.5}[scale]
    scores = (k @ q.transpose(-2, -1) if kq else q @ k.transpose(-2, -1)) / divisor
    if mask is not None and mask_mode in ("fill", "zero", "inverted"):
        blocked = mask if mask_mode == "inverted" else ~mask
        scores = scores.masked_fill(blocked, 0.0 if mask_mode == "zero" else float("-inf"))
    weights = torch.softmax(scores, dim=axis)
    if mask is not None and mask_mode == "after":
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def learner_mha(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None, *, split="features", **attention_switches):
    """A multi-head forward (x @ W, no biases) as a learner writes it: split "features" (right) |
    "tokens" | "strided"; ``attention_switches`` go to learner_attention."""
    B, T_q, C = x_q.shape
    hs = C // n_heads

    def heads(t, n):  # (B, T, n * hs) -> (B, n, T, hs)
        if split == "tokens":
            return t.reshape(B, n, t.shape[1], hs)
        if split == "strided":
            return t.reshape(B, t.shape[1], hs, n).permute(0, 3, 1, 2)
        return t.reshape(B, t.shape[1], n, hs).transpose(1, 2)

    n_kv = W_k.shape[1] // hs
    q, k, v = heads(x_q @ W_q, n_heads), heads(x_kv @ W_k, n_kv), heads(x_kv @ W_v, n_kv)
    k, v = k.repeat_interleave(n_heads // n_kv, 1), v.repeat_interleave(n_heads // n_kv, 1)
    context, _ = learner_attention(q, k, v, mask, **attention_switches)
    return context.transpose(1, 2).reshape(B, T_q, C) @ W_o  # (B, H, T_q, hs) -> (B, T_q, C)
