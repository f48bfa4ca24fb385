"""The lesson-12 LoRA check passes right layers (the lesson's solution and tfmlib's own) and catches
realistic wrong ones, each with its hint; a stub gets the not-implemented verdict."""
import math

import pytest
import torch
import torch.nn as nn

from helpers import assert_fails, verdict
import tfmlib.checks.lora as ck
from tfmlib.lora import LoRALinear as LibraryLoRALinear


class LoRAGood(nn.Module):
    """As the lesson's solution writes it."""

    def __init__(self, base, r, alpha, *, a_shape="r_in", b_init="zeros", a_init="kaiming", freeze=True,
                 parameters=True):
        super().__init__()
        self.base = base
        if freeze:
            base.requires_grad_(False)
        shape_a = (r, base.in_features) if a_shape == "r_in" else (base.in_features, r)
        shape_b = (base.out_features, r) if a_shape == "r_in" else (r, base.out_features)
        A = torch.empty(shape_a)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5)) if a_init == "kaiming" else nn.init.zeros_(A)
        B = torch.zeros(shape_b) if b_init == "zeros" else torch.randn(shape_b) * 0.01
        self.lora_A = nn.Parameter(A) if parameters else A
        self.lora_B = nn.Parameter(B) if parameters else B
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling   # (..., in) -> (..., out)


class LoRAOneMatrix(LoRAGood):
    """Correct too: builds the (out, in) update first."""

    def forward(self, x):
        return self.base(x) + x @ (self.lora_B @ self.lora_A).T * self.scaling


def _variant(**options):
    class Variant(LoRAGood):
        def __init__(self, base, r, alpha):
            super().__init__(base, r, alpha, **options)
    return Variant


def _forward(fn):
    class Variant(LoRAGood):
        def forward(self, x):
            return fn(self, x)
    return Variant


class LoRAStub(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        raise NotImplementedError("Keep base frozen; A (r, in) random, B (out, r) zeros; scaling alpha / r.")


class LoRAForwardStub(LoRAGood):
    def forward(self, x):
        raise NotImplementedError("base(x) + x @ A^T @ B^T * scaling")


def test_right_layers_pass():
    for cls in (LoRAGood, LoRAOneMatrix, LibraryLoRALinear):
        result = ck.check_lora_linear(cls)
        assert result.passed, repr(result)
        assert "(4 cases)" in repr(result)


def test_stubs_get_the_not_implemented_verdict_with_their_hint():
    verdict(ck.check_lora_linear(LoRAStub), "not implemented", "B (out, r) zeros", in_hint=True)
    verdict(ck.check_lora_linear(LoRAForwardStub), "not implemented", "x @ A^T @ B^T", in_hint=True)


@pytest.mark.parametrize("wrong, hint", [
    (_variant(b_init="random"), ck.HINT_B_ZERO),
    (_variant(a_init="zeros"), ck.HINT_A_ZERO),
    (_variant(a_shape="in_r"), ck.HINT_AB_SWAPPED),
    (_variant(freeze=False), ck.HINT_BASE_TRAINABLE),
    (_variant(parameters=False), ck.HINT_NOT_PARAMETER),
    (_forward(lambda self, x: (x @ self.lora_A.T @ self.lora_B.T) * self.scaling), ck.HINT_NO_BASE),
    (_forward(lambda self, x: self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling * self.lora_A.shape[0]),
     ck.HINT_SCALE_ALPHA),
    (_forward(lambda self, x: self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) / self.scaling),
     ck.HINT_SCALE_INVERTED),
    (_forward(lambda self, x: self.base(x) + x @ self.lora_A.T @ self.lora_B.T), ck.HINT_NO_SCALE),
    (_forward(lambda self, x: self.base(x) + (x @ self.lora_A.T.detach() @ self.lora_B.T) * self.scaling),
     "no gradient reaches lora_A"),
    (_forward(lambda self, x: self.base(x.detach()) + (x.detach() @ self.lora_A.T @ self.lora_B.T) * self.scaling),
     "no gradient reaches the input x"),
    (_forward(lambda self, x: self.base(x) + (x @ self.lora_B @ self.lora_A) * self.scaling), "shapes do not fit"),
])
def test_wrong_layers_fail_with_their_hint(wrong, hint):
    assert_fails(ck.check_lora_linear(wrong), hint)


def test_a_layer_that_freezes_its_adapters_or_rebuilds_the_base_fails():
    class FrozenAdapters(LoRAGood):
        def __init__(self, base, r, alpha):
            super().__init__(base, r, alpha)
            self.requires_grad_(False)

    class NewBase(LoRAGood):
        def __init__(self, base, r, alpha):
            super().__init__(nn.Linear(base.in_features, base.out_features).requires_grad_(False), r, alpha)

    assert_fails(ck.check_lora_linear(FrozenAdapters), ck.HINT_ADAPTER_FROZEN)
    assert_fails(ck.check_lora_linear(NewBase), ck.HINT_KEEP_BASE)
    assert_fails(ck.check_lora_linear(lambda base, r, alpha: None), ck.HINT_NOT_MODULE)



class LoRAIntegerDivision(LoRAGood):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.scaling = alpha // r                                          # 1.5 // 3 = 0.0: the update vanishes


@pytest.mark.parametrize("wrong, hint", [
    (_forward(lambda self, x: x @ self.base.weight.T + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling),
     "call self.base(x): it adds the bias"),
    (LoRAIntegerDivision, ck.HINT_INTEGER_DIVISION),
])
def test_dropped_bias_and_integer_division_get_their_hint(wrong, hint):
    assert_fails(ck.check_lora_linear(wrong), hint)
