"""Feedback beyond "values differ": probes that find the mistake inside composite code, and
``try_it`` for the notebook cells that run the learner's functions outside a check.

    with explain_failure(lambda: probe_helpers(fn, {"softmax": check_softmax})):
        expect_close(out, expected, "output")        # a vague failure gets the helper's diagnosis

    with try_it("this cell"):                         # a stub or an error prints one line, no traceback
        context, weights = scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
"""
from __future__ import annotations

import contextlib
import sys

from . import core
from .core import CheckFailed, _hint_for_exception, _learner_frame, _time_limit, _TimedOut, stub_name

__all__ = ["explain_failure", "probe_helpers", "try_it"]


@contextlib.contextmanager
def explain_failure(*probes):
    """Turn a vague failure ("values differ", no hint) into a diagnosis.

    Each probe is called only when the block raised a CheckFailed without a hint; a probe runs the
    learner's code the way a unit check does (e.g. one head, identity weights, so that a composite
    function IS its inner piece) and raises CheckFailed naming the inner mistake, or returns quietly.
    The first probe that names one wins; its message is added to the original one.

        with explain_failure(lambda: probe_attention_core(run, "your multi_head_attention")):
            expect_close(out, expected, "output")
    """
    try:
        yield
    except CheckFailed as failure:
        if failure.hint is None:
            for probe in probes:
                try:
                    probe()
                except CheckFailed as inner:
                    raise CheckFailed(f"{failure.message}. {inner.message}", inner.hint) from None
                except Exception:  # noqa: BLE001 - a probe that cannot run explains nothing
                    continue
        raise


def _names_used(fn) -> set[str]:
    """Global names a function (or a module's forward) refers to, nested functions and lambdas included."""
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "forward", None), "__code__", None)
    names, todo = set(), [code] if code is not None else []
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    return names


def probe_helpers(fn, helper_checks: dict) -> None:
    """Point to the earlier exercise that is wrong: when ``fn`` calls a helper the learner wrote
    (a global of the learner's notebook named in ``helper_checks``) and that helper fails its own
    check, raise CheckFailed saying so. Quiet otherwise. For explain_failure()."""
    scope = getattr(fn, "__globals__", None) or getattr(getattr(fn, "forward", None), "__globals__", {})
    used = _names_used(fn)
    for name, helper_check in helper_checks.items():
        helper = scope.get(name)
        module = getattr(helper, "__module__", None) or ""
        if name not in used or not callable(helper) or module.startswith("tfmlib"):
            continue
        result = helper_check(helper)
        if result.status == "failed":
            raise CheckFailed(f"Your `{name}`, which this code calls, fails its own check ({result.message})",
                              f"fix `{name}` first and run its check cell again" +
                              (f": {result.hint}" if result.hint else "."))


@contextlib.contextmanager
def try_it(what: str = "this cell"):
    """For the "try it" cells of an exercise notebook: a stub or an error prints one line, no traceback.

        with try_it():
            context, weights = scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
            print(weights)
    """
    try:
        with _time_limit(core.TIME_LIMIT_S):
            yield
    except NotImplementedError:
        stub = stub_name(sys.exc_info()[2])
        print(f"⏳ {what} needs `{stub}`, which is still a stub: write it (and run its cell) first.")
    except _TimedOut:
        print(f"❌ {what} did not finish within {core.TIME_LIMIT_S:g} s: a loop that never ends?")
    except Exception as e:  # noqa: BLE001 - an exercise notebook never shows a raw traceback
        where = _learner_frame(sys.exc_info()[2])
        hint = _hint_for_exception(e)
        print(f"❌ {what} raised {type(e).__name__}: {e}{where}" + (f"\n   Hint: {hint}" if hint else ""))
