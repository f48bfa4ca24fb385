"""Exercise checks: each takes the learner's function or module and returns a
CheckResult whose repr is a short verdict with a hint. See ``core`` for how to
write one; one module per lesson topic holds its checks."""
from .core import CheckFailed, CheckResult, call, check, expect_close, expect_shape, expect_tensor, grad_of
from .probes import explain_failure, probe_helpers, try_it

__all__ = ["CheckFailed", "CheckResult", "call", "check", "expect_close", "expect_shape", "expect_tensor", "grad_of",
           "explain_failure", "probe_helpers", "try_it"]
