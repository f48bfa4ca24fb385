"""The check machinery never lets a learner's exception escape and names what is wrong."""
import torch

from tfmlib.checks import CheckFailed, call, check, expect_close, grad_of


@check("double")
def check_double(fn):
    x = torch.randn(2, 3)
    expect_close(call(fn, x), 2 * x, "output on a (2, 3) input",
                 mistakes={"multiply, don't add: x * 2.": x + 2})
    g, = grad_of(fn, x)
    expect_close(g, 2 * torch.randn(2, 3, generator=torch.Generator().manual_seed(0)), "gradient")
    return 2


def test_reference_passes_and_counts_cases():
    result = check_double(lambda x: 2 * x)
    assert result.passed and bool(result)
    assert repr(result) == "✅ double: passed (2 cases)"


def test_stub_reports_not_implemented():
    def stub(x):
        raise NotImplementedError("Multiply by two.")
    result = check_double(stub)
    assert result.status == "not implemented" and not result
    assert "not implemented yet" in repr(result)


def test_known_mistake_gets_its_hint():
    result = check_double(lambda x: x + 2)
    assert result.status == "failed"
    assert "Hint: multiply, don't add" in repr(result)


def test_learner_exception_becomes_a_message_not_a_traceback():
    def broken(x):
        return x @ torch.ones(5, 5)
    result = check_double(broken)
    assert result.status == "failed"
    assert "your code raised RuntimeError" in result.message and "in broken" in result.message
    assert "Traceback" not in repr(result)
    assert "shapes do not fit" in result.hint


def test_wrong_type_and_wrong_shape_are_named():
    r = check_double(lambda x: (2 * x, None))
    assert "expected a torch.Tensor, got tuple" in r.message and "not a tuple" in r.hint
    r = check_double(lambda x: (2 * x).T)
    assert "expected shape (2, 3), got (3, 2)" in r.message and "transpose" in r.hint
    r = check_double(lambda x: (2 * x).reshape(6))
    assert "got (6,)" in r.message and "view/reshape" in r.hint


def test_nan_output_and_detached_gradients_are_explained():
    r = check_double(lambda x: x * float("nan"))
    assert "NaN" in r.message
    r = check_double(lambda x: torch.tensor((2 * x).tolist()))
    assert r.status == "failed" and "gradients" in r.message.lower() + (r.hint or "").lower()


def test_a_bug_in_a_check_itself_is_still_a_verdict():
    @check("buggy check")
    def buggy(fn):
        raise KeyError("oops")
    r = buggy(lambda: None)
    assert r.status == "failed" and "KeyError" in r.message


def test_check_failed_carries_hint():
    e = CheckFailed("msg", "hint")
    assert (e.message, e.hint) == ("msg", "hint")
