"""The machinery behind every exercise check.

A check takes the learner's function or module, runs it on random inputs and edge
cases, compares it with tfmlib's reference, and returns a ``CheckResult`` whose
repr is a one-line verdict (plus a hint). It never lets an exception escape:

    ✅ softmax: passed (4 cases)
    ⏳ softmax: not implemented yet — replace the `raise NotImplementedError` stub.
       Hint: Subtract the row max, exponentiate, divide by the row sum.     (the stub's own message)
    ❌ softmax: values differ on a (2, 3, 5) batch (max |difference| 0.31).
       Hint: did you take the softmax over the last axis (the keys)?

Every check runs under a time limit (``TIME_LIMIT_S``, 30 s; environment variable
TFM_CHECK_TIME_LIMIT): code that never returns gets a verdict instead of a hung cell.
``call`` also notices a function that changes its caller's tensors in place, and a stub
raised by a helper is named ("`causal_mask` is still a stub").

Writing a check:

    @check("softmax")
    def check_softmax(fn):
        x = torch.randn(2, 3, 5)
        expect_close(call(fn, x), reference(x), "output on a (2, 3, 5) batch",
                     mistakes={"did you take the softmax over the last axis?": torch.softmax(x, 0)})
        return 1      # number of cases that passed (optional)
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import linecache
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import torch

__all__ = ["CheckResult", "CheckFailed", "check", "call", "expect_close", "expect_shape", "expect_tensor",
           "grad_of", "stub_name", "allclose", "copy_reference_weights", "vary_norms", "hint_for_shape",
           "TIME_LIMIT_S"]

TIME_LIMIT_S = float(os.environ.get("TFM_CHECK_TIME_LIMIT", "30"))
HINT_EMPTY_ROW = ("NaN where the reference has a row of zeros: that row has nothing to attend to (every key masked, "
                  "or no real token), and the softmax or the mean divides 0 by 0. Give such rows zeros, e.g. "
                  "weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0) after the softmax.")
HINT_INPLACE = ("do not change the caller's tensors: work on a copy (x = x.clone()) or use out-of-place operations "
                "(x = x - m instead of x -= m, masked_fill instead of masked_fill_, no x[...] = ...).")


class CheckFailed(Exception):
    """Raised inside a check: ``message`` says what is wrong, ``hint`` suggests the usual mistake."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


class _NotImplementedYet(Exception):
    pass


class _TimedOut(BaseException):
    """Raised by the alarm inside learner code; BaseException so that no `except Exception` swallows it."""


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


def stub_name(tb) -> str | None:
    """The name of the function whose `raise NotImplementedError` a traceback ends in; a method is
    named with its class ("LoRALinear.__init__")."""
    frames = list(traceback.walk_tb(tb))
    if not frames:
        return None
    code = frames[-1][0].f_code
    qualname = getattr(code, "co_qualname", code.co_name)
    return qualname.rsplit("<locals>.", 1)[-1]              # a class defined inside a function: its own name


def _tensor_arguments(fn, args, kwargs) -> list[tuple[str, "torch.Tensor"]]:
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs).arguments
        named = list(bound.items())
    except (TypeError, ValueError):
        named = [(f"argument {i + 1}", a) for i, a in enumerate(args)] + list(kwargs.items())
    return [(name, value) for name, value in named if isinstance(value, torch.Tensor)]


def _changed(before: torch.Tensor, after: torch.Tensor) -> bool:
    if before.shape != after.shape or before.dtype != after.dtype:
        return True
    if before.is_floating_point() or before.is_complex():
        return not torch.allclose(before, after, rtol=0.0, atol=0.0, equal_nan=True)
    return not torch.equal(before, after)


_changed_inputs: list[list[str]] = []  # one list per running check: inputs the learner changed in place


def call(fn, *args, **kwargs):
    """Call learner code; turn anything it raises into a readable CheckFailed.

    A stub (NotImplementedError) ends the check as "not implemented", naming the stub when a
    helper raised it. A function that changes a tensor it was given (in place) fails.
    """
    inputs = _tensor_arguments(fn, args, kwargs)
    snapshots = [(name, t, t.detach().clone()) for name, t in inputs]
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError as e:  # args: the stub's name, its message (the hint)
        raise _NotImplementedYet(stub_name(sys.exc_info()[2]) or "", str(e)) from None
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001 - any learner error becomes feedback
        where = _learner_frame(sys.exc_info()[2])
        raise CheckFailed(f"your code raised {type(e).__name__}: {e}{where}",
                          _hint_for_exception(e)) from None
    for name, t, before in snapshots:
        if _changed(before, t.detach()) and _changed_inputs and name not in _changed_inputs[-1]:
            _changed_inputs[-1].append(name)  # reported by check() unless the check names it first
    return out


def _hint_for_exception(e: Exception) -> str | None:
    text = str(e)
    if "in-place operation" in text:
        return HINT_INPLACE
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


def allclose(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same shape and values within tolerance (NaN equals NaN); any dtype is compared in expected's."""
    return actual.shape == expected.shape and torch.allclose(actual.detach().to(expected.dtype), expected.detach(),
                                                             atol=atol, rtol=rtol, equal_nan=True)


def expect_close(actual, expected: torch.Tensor, what: str, mistakes: dict | list | None = None,
                 atol: float = 1e-5, rtol: float = 1e-4, hint: str | None = None,
                 empty_row_hint: str = HINT_EMPTY_ROW, shape_hint: str | None = None) -> None:
    """Compare with the reference. ``mistakes`` says what typical wrong versions return: a dict
    {hint: wrong output} or a list of (hint, wrong output) pairs (one hint may have several forms);
    a wrong output may be a function computing it, called only when needed. When the learner's
    output matches one, that hint is given. NaN exactly in rows where the reference is all zeros
    (nothing to attend to / no real token) gets ``empty_row_hint``; other wrong values get ``hint``."""
    actual = expect_shape(actual, expected.shape, what, hint=shape_hint or hint_for_shape(actual, expected))
    actual = actual.detach().to(expected.dtype)
    expected = expected.detach()
    if torch.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True):
        return
    pairs = mistakes.items() if isinstance(mistakes, dict) else (mistakes or [])
    for mistake_hint, wrong in pairs:
        wrong = wrong() if callable(wrong) else wrong
        if allclose(actual, wrong.detach(), atol=atol, rtol=rtol):
            raise CheckFailed(f"{what}: values differ from the reference", mistake_hint)
    if torch.isnan(actual).any() and not torch.isnan(expected).any():
        if actual.dim() and bool(((expected == 0).all(-1) | ~torch.isnan(actual).any(-1)).all()):
            raise CheckFailed(f"{what}: your output contains NaN in rows where the reference is all zeros",
                              empty_row_hint)
        raise CheckFailed(f"{what}: your output contains NaN", hint or "NaN often comes from a fully masked row or from exp() of large numbers.")
    diff = (actual - expected).abs().max().item()
    if hint is None and _same_values(actual, expected):
        hint = ("the values are right but arranged in the wrong order: check your transpose/permute/view/reshape "
                "(rows must index the queries / tokens, columns the keys / features).")
    raise CheckFailed(f"{what}: values differ from the reference (max |difference| {diff:.3g})", hint)


def _same_values(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """The same numbers in another arrangement (sorted values agree)."""
    if actual.numel() != expected.numel() or not actual.is_floating_point():
        return False
    a, e = actual.detach().flatten().to(expected.dtype).sort().values, expected.detach().flatten().sort().values
    return torch.allclose(a, e, atol=1e-5, rtol=1e-4, equal_nan=True)


def hint_for_shape(actual, expected) -> str | None:
    """A hint for output of the wrong shape: a tuple, the right values rearranged, sizes permuted."""
    if isinstance(actual, (tuple, list)):
        return "return one tensor, not a tuple or list."
    if not isinstance(actual, torch.Tensor):
        return None
    if _same_values(actual, expected):
        return ("the values are right but arranged in the wrong shape or order: check your transpose/permute/"
                "view/reshape (or the order of a returned pair).")
    if actual.dim() == expected.dim() and sorted(actual.shape) == sorted(expected.shape):
        return "the sizes are right but in the wrong order: check your transpose/permute."
    if actual.numel() == expected.numel():
        return "the right number of elements in the wrong shape: check your view/reshape."
    return None


def copy_reference_weights(block, sources: dict, keep_hint: str) -> None:
    """Load each reference submodule's weights into the learner's submodule of the same name, so that
    the learner's block and the reference compute with identical weights.

    sources: {attribute name in the learner's block: reference nn.Module}. A missing submodule or one
    whose parameters do not fit fails the check with ``keep_hint`` ("keep the given __init__ ...")."""
    missing = [name for name in sources if not isinstance(getattr(block, name, None), torch.nn.Module)]
    if missing:
        raise CheckFailed(f"your block has no submodule(s) {missing}", keep_hint)
    for name, source in sources.items():
        try:
            getattr(block, name).load_state_dict(source.state_dict())
        except RuntimeError as e:
            raise CheckFailed(f"could not copy the reference weights into {name}: {e}", keep_hint) from None


def vary_norms(*norms) -> None:
    """Give LayerNorms weights and biases that are not 1 and 0, so that a misplaced norm shows."""
    with torch.no_grad():
        for norm in norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.3)


def grad_of(fn, *inputs: torch.Tensor, seed: int = 0):
    """Gradients of sum(output * fixed random weights) with respect to ``inputs``."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = call(fn, *inputs)
    out = out[0] if isinstance(out, tuple) else out
    expect_tensor(out, "output")
    # drawn in float32 then cast: a float64 (or float16) output gets the same weights as the reference's
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    try:
        grads = torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True)
    except RuntimeError as e:
        raise CheckFailed(f"gradients could not flow through your code: {e}",
                          "avoid .detach(), .item(), .numpy() or in-place edits of tensors that need gradients.") from None
    return grads


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Raise _TimedOut in the main thread after ``seconds`` (Unix, main thread only; elsewhere no limit)."""
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def _alarm(signum, frame):
        raise _TimedOut

    outer_left = signal.getitimer(signal.ITIMER_REAL)[0]    # a limit already running (nested use)
    previous = signal.signal(signal.SIGALRM, _alarm)
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_left) if outer_left else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:  # give the outer limit what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer_left - (time.monotonic() - start)))


def _not_implemented_message(stub: str) -> str:
    if stub and not stub.startswith("<"):
        return (f"not implemented yet — `{stub}` is still a stub: replace its `raise NotImplementedError` "
                "with your code (and run its cell), then run this cell again.")
    return ("not implemented yet — replace the `raise NotImplementedError` stub with your code, "
            "then run this cell again.")


def check(name: str, time_limit: float | None = None):
    """Decorator that turns a function raising CheckFailed into a check returning a CheckResult.

    The learner's code gets ``time_limit`` seconds in all (default TIME_LIMIT_S)."""

    def decorate(body):
        @functools.wraps(body)
        def run(*args, **kwargs) -> CheckResult:
            limit = TIME_LIMIT_S if time_limit is None else time_limit
            _changed_inputs.append([])
            try:
                with _time_limit(limit), torch.random.fork_rng():
                    torch.manual_seed(0)
                    cases = body(*args, **kwargs)
                changed = _changed_inputs[-1]
                if changed:  # right results, but the caller's tensors were modified
                    names = ", ".join(f"`{n}`" for n in changed)
                    raise CheckFailed(f"your code changed its input {names} in place (the caller's tensor "
                                      "is modified)", HINT_INPLACE)
            except _TimedOut:
                return CheckResult(name, "failed", f"your code did not finish within {limit:g} s, so the check "
                                   "stopped it", "a loop that never ends? Check that every while loop's condition "
                                   "changes inside the loop, and that a for loop runs over a finite range.")
            except _NotImplementedYet as e:
                # The stub's message is the exercise's hint: repeat it under the verdict.
                stub, hint = e.args
                return CheckResult(name, "not implemented", _not_implemented_message(stub), hint or None)
            except CheckFailed as e:
                return CheckResult(name, "failed", e.message, e.hint)
            except Exception as e:  # noqa: BLE001 - a check must never show a raw traceback
                return CheckResult(name, "failed", f"the check could not run your code: {type(e).__name__}: {e}")
            finally:
                _changed_inputs.pop()
            suffix = f" ({cases} case{'' if cases == 1 else 's'})" if isinstance(cases, int) else ""
            return CheckResult(name, "passed", f"passed{suffix}")

        return run

    return decorate
