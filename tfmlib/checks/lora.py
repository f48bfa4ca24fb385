"""Checks for lesson 12's LoRA exercise: a low-rank adapter around a frozen linear layer.

    check_lora_linear(LoRALinear)   a module class: LoRALinear(base: nn.Linear, r: int, alpha: float)
                                    with attributes lora_A (r, in) and lora_B (out, r);
                                    forward(x) = base(x) + x @ A^T @ B^T * alpha / r

The check builds the learner's layer around seeded nn.Linear layers (with and without a bias,
several ranks and alphas), then checks the initialisation (B zero, A random, base frozen, only A
and B trainable), the output at initialisation (equal to the base's), the output and the
gradients with respect to x, A and B once A and B hold known random values, against tfmlib's
reference (``tfmlib.lora``), and names the usual mistake when the output matches it.

Shape legend: B batch, T sequence length, in / out the layer's input / output features, r the rank.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core import CheckFailed, call, check, expect_close, expect_shape, grad_of

__all__ = ["check_lora_linear", "lora_reference",
           "HINT_B_ZERO", "HINT_A_ZERO", "HINT_AB_SWAPPED", "HINT_SHAPES", "HINT_NOT_PARAMETER",
           "HINT_BASE_TRAINABLE", "HINT_ADAPTER_FROZEN", "HINT_KEEP_BASE", "HINT_NO_BASE",
           "HINT_SCALE_ALPHA", "HINT_SCALE_INVERTED", "HINT_NO_SCALE", "HINT_NOT_MODULE",
           "HINT_NO_BIAS", "HINT_INTEGER_DIVISION"]

HINT_B_ZERO = ("B must start at zero so the model starts equal to the base: "
               "self.lora_B = nn.Parameter(torch.zeros(out_features, r)); A is the random one.")
HINT_A_ZERO = ("A must start random (e.g. nn.init.kaiming_uniform_ or torch.randn(r, in) / r): with A = 0 and B = 0 "
               "both gradients are zero and the adapter never learns.")
HINT_AB_SWAPPED = ("A and B are swapped or transposed: lora_A has shape (r, in_features) (it maps the input down to "
                   "r numbers) and lora_B has shape (out_features, r) (it maps them up), like nn.Linear's (out, in).")
HINT_SHAPES = ("lora_A has shape (r, in_features) and lora_B (out_features, r), with in_features and out_features "
               "taken from the base layer (base.in_features, base.out_features).")
HINT_NOT_PARAMETER = ("wrap A and B in nn.Parameter(...) and assign them to self.lora_A / self.lora_B, so that "
                      "model.parameters() (and the optimizer) see them.")
HINT_BASE_TRAINABLE = ("freeze the base layer: base.weight.requires_grad_(False) and the same for its bias "
                       "(or base.requires_grad_(False)). Only A and B train.")
HINT_ADAPTER_FROZEN = "A and B are the parameters that train: they must keep requires_grad=True."
HINT_KEEP_BASE = ("keep the base layer you are given as it is (self.base = base): do not re-initialise or copy its "
                  "weights; at initialisation the output must equal base(x).")
HINT_NO_BASE = ("the output is the base layer's output PLUS the low-rank update: base(x) + x @ A^T @ B^T * alpha / r "
                "(yours is missing base(x)).")
HINT_NO_BIAS = ("call self.base(x): it adds the bias. x @ base.weight.T (or F.linear(x, base.weight)) drops "
                "base.bias.")
HINT_INTEGER_DIVISION = ("scale by alpha / r (true division): alpha // r is integer division and rounds down "
                         "(1.5 // 3 = 0.0, so the update vanishes).")
HINT_SCALE_ALPHA = "scale the update by alpha / r, not by alpha alone."
HINT_SCALE_INVERTED = "scale the update by alpha / r, not by r / alpha."
HINT_NO_SCALE = "scale the low-rank update by alpha / r (yours adds it unscaled)."
HINT_NOT_MODULE = "pass the class itself (check_lora_linear(LoRALinear)), and keep its nn.Module base."

IN, OUT = 12, 8   # in != out != r, so that swapped shapes show


def lora_reference(x: torch.Tensor, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """x (..., in) -> (..., out): F.linear with the merged weight W + B A * scaling."""
    return F.linear(x, base.weight + B @ A * scaling, base.bias)


def _build(cls, in_features: int, out_features: int, r: int, alpha: float, bias: bool, seed: int):
    """The learner's layer around a seeded nn.Linear, and an untouched copy of that nn.Linear."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        base = nn.Linear(in_features, out_features, bias=bias)
    reference = nn.Linear(in_features, out_features, bias=bias).requires_grad_(False)
    reference.load_state_dict(base.state_dict())
    module = call(cls, base, r, alpha)
    what = f"LoRALinear(nn.Linear({in_features}, {out_features}{'' if bias else ', bias=False'}), r={r}, alpha={alpha})"
    if not isinstance(module, nn.Module):
        raise CheckFailed(f"{what} should build an nn.Module, got {type(module).__name__}", HINT_NOT_MODULE)
    return module, reference, what


def _check_init(module: nn.Module, what: str, in_features: int, out_features: int, r: int) -> None:
    A, B = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise CheckFailed(f"{what} has no tensors lora_A and lora_B", HINT_NOT_PARAMETER)
    shapes = (tuple(A.shape), tuple(B.shape))
    if shapes != ((r, in_features), (out_features, r)):
        swapped = shapes in (((in_features, r), (r, out_features)), ((out_features, r), (r, in_features)),
                             ((r, out_features), (in_features, r)))
        raise CheckFailed(f"{what}: lora_A has shape {shapes[0]} and lora_B {shapes[1]}, expected "
                          f"{(r, in_features)} and {(out_features, r)}", HINT_AB_SWAPPED if swapped else HINT_SHAPES)
    own = {id(p) for p in module.parameters()}
    if id(A) not in own or id(B) not in own:
        raise CheckFailed(f"{what}: lora_A and lora_B are not parameters of the module", HINT_NOT_PARAMETER)
    if not (A.requires_grad and B.requires_grad):
        raise CheckFailed(f"{what}: lora_A or lora_B has requires_grad=False", HINT_ADAPTER_FROZEN)
    others = [name for name, p in module.named_parameters() if p is not A and p is not B and p.requires_grad]
    if others:
        raise CheckFailed(f"{what}: the base layer's parameters still train ({', '.join(others)} have "
                          "requires_grad=True)", HINT_BASE_TRAINABLE)
    if not torch.all(B.detach() == 0):
        raise CheckFailed(f"{what}: lora_B does not start at zero", HINT_B_ZERO)
    if torch.all(A.detach() == 0):
        raise CheckFailed(f"{what}: lora_A starts at zero", HINT_A_ZERO)


@check("LoRALinear")
def check_lora_linear(cls):
    """cls(base: nn.Linear, r, alpha) -> module with lora_A (r, in), lora_B (out, r);
    module(x (..., in)) -> (..., out) = base(x) + x @ A^T @ B^T * alpha / r."""
    # (in, out, r, alpha, bias, input shape, description)
    cases = [(IN, OUT, 4, 8.0, True, (2, 5, IN), "a (2, 5, 12) batch"),
             (IN, OUT, 2, 6.0, False, (7, IN), "a (7, 12) input without a batch axis, no bias"),
             (6, 10, 3, 1.5, True, (1, 1, 6), "a batch of one token, 6 -> 10 features"),
             (IN, OUT, 1, 16.0, True, (3, 4, IN), "rank 1")]
    n = 0
    for i, (in_f, out_f, r, alpha, bias, shape, description) in enumerate(cases):
        module, base, what = _build(cls, in_f, out_f, r, alpha, bias, seed=i)
        _check_init(module, what, in_f, out_f, r)
        module.eval()
        x = torch.randn(shape)
        out = call(module, x.clone())
        expect_shape(out, (*shape[:-1], out_f), f"{what} on {description}")
        with torch.no_grad():
            at_init = base(x)
            mistakes = [(HINT_NO_BIAS, F.linear(x, base.weight))] if bias else []   # x @ W^T: no bias
            mistakes += [(HINT_NO_BASE, torch.zeros_like(at_init)),
                        (HINT_NO_BASE, at_init - F.linear(x, base.weight))]  # the bias alone
        expect_close(out, at_init, f"output at initialisation (B = 0) on {description}: must equal base(x)",
                     mistakes=mistakes, hint=HINT_KEEP_BASE)
        # A and B hold known random values: the update shows
        with torch.no_grad():
            A, B = torch.randn(r, in_f) / r ** 0.5, torch.randn(out_f, r)
            module.lora_A.copy_(A)
            module.lora_B.copy_(B)
            b = base.bias
            expected = lora_reference(x, base, A, B, alpha / r)
            update = F.linear(x, B @ A)
            mistakes = [(HINT_NO_BIAS, F.linear(x, base.weight) + update * (alpha / r)),
                        (HINT_INTEGER_DIVISION, base(x) + update * (alpha // r)),
                        (HINT_SCALE_ALPHA, base(x) + update * alpha),
                        (HINT_SCALE_INVERTED, base(x) + update * (r / alpha)),
                        (HINT_NO_SCALE, base(x) + update),
                        (HINT_NO_BASE, update * (alpha / r)),
                        (HINT_NO_BASE, update * (alpha / r) + (b if b is not None else 0.0))]
        out = call(module, x.clone())
        expect_close(out, expected, f"output with non-zero A and B on {description}", mistakes=mistakes)
        # gradients with respect to x, A and B (the base gets none: it is frozen)
        (g_x,) = grad_of(module, x)
        (g_x_ref,) = grad_of(lambda t: lora_reference(t, base, A, B, alpha / r), x)
        if g_x is None:
            raise CheckFailed("no gradient reaches the input x", "avoid .detach(), .item() and torch.no_grad() in forward.")
        expect_close(g_x, g_x_ref, f"gradient with respect to x on {description}", atol=1e-4)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(i))
        out = call(module, x.clone())
        try:
            g_A, g_B = torch.autograd.grad((out * weights).sum(), (module.lora_A, module.lora_B), allow_unused=True)
        except RuntimeError as e:
            raise CheckFailed(f"gradients could not flow to lora_A and lora_B: {e}",
                              "avoid .detach() and torch.no_grad() in forward.") from None
        A_ref, B_ref = A.clone().requires_grad_(), B.clone().requires_grad_()
        g_A_ref, g_B_ref = torch.autograd.grad((lora_reference(x, base, A_ref, B_ref, alpha / r) * weights).sum(),
                                               (A_ref, B_ref))
        for g, g_ref, name in ((g_A, g_A_ref, "lora_A"), (g_B, g_B_ref, "lora_B")):
            if g is None:
                raise CheckFailed(f"no gradient reaches {name} on {description}",
                                  "use self.lora_A and self.lora_B themselves in forward (not copies or .data).")
            expect_close(g, g_ref, f"gradient with respect to {name} on {description}", atol=1e-4)
        n += 1
    return n
