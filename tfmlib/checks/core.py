"""The machinery behind every exercise check.

A check takes the learner's function or module, runs it on random inputs and edge
cases, compares it with tfmlib's reference, and returns a ``CheckResult`` whose
repr is a one-line verdict (plus a hint). It never lets an exception escape:

    ✅ softmax: passed (4 cases)
    ⏳ softmax: not implemented yet — replace the `raise NotImplementedError` stub.
       Hint: Subtract the row max, exponentiate, divide by the row sum.     (the stub's own message)
    ❌ softmax: values differ on a (2, 3, 5) batch (max |difference| 0.31).
       Hint: did you take the softmax over the last axis (the keys)?

Writing a check:

    @check("softmax")
    def check_softmax(fn):
        x = torch.randn(2, 3, 5)
        expect_close(call(fn, x), reference(x), "output on a (2, 3, 5) batch",
                     mistakes={"did you take the softmax over the last axis?": torch.softmax(x, 0)})
        return 1      # number of cases that passed (optional)
"""
from __future__ import annotations

import functools
import linecache
import sys
import traceback
from dataclasses import dataclass

import torch

__all__ = ["CheckResult", "CheckFailed", "check", "call", "expect_close", "expect_shape", "expect_tensor",
           "grad_of"]


class CheckFailed(Exception):
    """Raised inside a check: ``message`` says what is wrong, ``hint`` suggests the usual mistake."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


class _NotImplementedYet(Exception):
    pass


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # "passed", "failed", "not implemented"
    message: str = ""
    hint: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        icon = {"passed": "✅", "failed": "❌", "not implemented": "⏳"}[self.status]
        text = f"{icon} {self.name}: {self.message}"
        if self.hint:
            text += f"\n   Hint: {self.hint}"
        return text

    __str__ = __repr__


def _learner_frame(tb) -> str:
    """The deepest traceback line that is not tfmlib's or PyTorch's: where the learner's code failed."""
    where = ""
    for frame, lineno in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if "tfmlib" in filename or "site-packages" in filename or "/torch/" in filename:
            continue
        source = linecache.getline(filename, lineno, frame.f_globals).strip()
        where = f" (in {frame.f_code.co_name}, line {lineno}: `{source}`)" if source else f" (in {frame.f_code.co_name})"
    return where


def call(fn, *args, **kwargs):
    """Call learner code; turn anything it raises into a readable CheckFailed."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        raise _NotImplementedYet(str(e)) from None
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001 - any learner error becomes feedback
        where = _learner_frame(sys.exc_info()[2])
        raise CheckFailed(f"your code raised {type(e).__name__}: {e}{where}",
                          _hint_for_exception(e)) from None


def _hint_for_exception(e: Exception) -> str | None:
    text = str(e)
    if "mat1 and mat2" in text or "size of tensor a" in text or "must match the size" in text:
        return "two tensors' shapes do not fit: print the shapes before the failing line (transpose? wrong axis?)."
    if "view size is not compatible" in text:
        return "after transpose() a tensor is not contiguous: use .reshape(...) or .contiguous().view(...)."
    if "expected scalar type" in text or "dtype" in text:
        return "mixed dtypes: masks are bool, ids are long, activations are float."
    return None


def expect_tensor(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        hint = "return a torch.Tensor, not a tuple." if isinstance(x, tuple) else "return a torch.Tensor."
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(x).__name__}", hint)
    return x


def expect_shape(x, shape, what: str, hint: str | None = None) -> torch.Tensor:
    x = expect_tensor(x, what)
    if tuple(x.shape) != tuple(shape):
        raise CheckFailed(f"{what}: expected shape {tuple(shape)}, got {tuple(x.shape)}", hint)
    return x


def expect_close(actual, expected: torch.Tensor, what: str, mistakes: dict | None = None,
                 atol: float = 1e-5, rtol: float = 1e-4, hint: str | None = None) -> None:
    """Compare with the reference. ``mistakes`` maps a hint to what a typical wrong version returns:
    when the learner's output matches one of them, that hint is given."""
    actual = expect_shape(actual, expected.shape, what, hint=_shape_hint(actual, expected))
    actual = actual.detach().to(expected.dtype)
    expected = expected.detach()
    if torch.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True):
        return
    for mistake_hint, wrong in (mistakes or {}).items():
        wrong = wrong.detach()
        if wrong.shape == actual.shape and torch.allclose(actual, wrong, atol=atol, rtol=rtol, equal_nan=True):
            raise CheckFailed(f"{what}: values differ from the reference", mistake_hint)
    if torch.isnan(actual).any() and not torch.isnan(expected).any():
        raise CheckFailed(f"{what}: your output contains NaN", hint or "NaN often comes from a fully masked row or from exp() of large numbers.")
    diff = (actual - expected).abs().max().item()
    raise CheckFailed(f"{what}: values differ from the reference (max |difference| {diff:.3g})", hint)


def _shape_hint(actual, expected) -> str | None:
    if not isinstance(actual, torch.Tensor):
        return None
    if actual.dim() == expected.dim() and sorted(actual.shape) == sorted(expected.shape):
        return "the sizes are right but in the wrong order: check your transpose/permute."
    if actual.numel() == expected.numel():
        return "the right number of elements in the wrong shape: check your view/reshape."
    return None


def grad_of(fn, *inputs: torch.Tensor, seed: int = 0):
    """Gradients of sum(output * fixed random weights) with respect to ``inputs``."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = call(fn, *inputs)
    out = out[0] if isinstance(out, tuple) else out
    expect_tensor(out, "output")
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    try:
        grads = torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True)
    except RuntimeError as e:
        raise CheckFailed(f"gradients could not flow through your code: {e}",
                          "avoid .detach(), .item(), .numpy() or in-place edits of tensors that need gradients.") from None
    return grads


def check(name: str):
    """Decorator that turns a function raising CheckFailed into a check returning a CheckResult."""

    def decorate(body):
        @functools.wraps(body)
        def run(*args, **kwargs) -> CheckResult:
            try:
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    cases = body(*args, **kwargs)
            except _NotImplementedYet as e:
                # The stub's message is the exercise's hint: repeat it under the verdict.
                return CheckResult(name, "not implemented", "not implemented yet — replace the "
                                   "`raise NotImplementedError` stub with your code, then run this cell again.",
                                   str(e) or None)
            except CheckFailed as e:
                return CheckResult(name, "failed", e.message, e.hint)
            except Exception as e:  # noqa: BLE001 - a check must never show a raw traceback
                return CheckResult(name, "failed", f"the check could not run your code: {type(e).__name__}: {e}")
            suffix = f" ({cases} case{'' if cases == 1 else 's'})" if isinstance(cases, int) else ""
            return CheckResult(name, "passed", f"passed{suffix}")

        return run

    return decorate
