"""LoRA: low-rank adapters on frozen linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation
of Large Language Models", arXiv:2106.09685).

A frozen linear layer y = x W^T + b gets a trainable low-rank update ΔW = B A:

    y = x W^T + b + (dropout(x) A^T B^T) * alpha / r         A (r, in), B (out, r), r << min(in, out)

B starts at zero, so the adapted model starts exactly equal to the base model; only A and B
train (r * (in + out) numbers per layer instead of in * out). After training, ``merge_lora``
folds B A * alpha / r into W: the result is an ordinary model with the original state_dict
keys, the same outputs and no extra cost at inference.

    names = add_lora(model, targets=("q_proj", "v_proj"), r=8, alpha=16)   # freezes everything else
    trainable, total = trainable_parameters(model)
    ... train: make_optimizer(model) only sees the adapters ...
    save_lora(model, "adapters.safetensors")          # the adapters alone (safetensors: no pickle)
    merge_lora(model)                                  # in place: plain nn.Linear layers again

Whole models (unmerged or merged) save and load with tfmlib.checkpoint (safetensors as well).

Shape legend: B batch, T sequence length, in / out the wrapped layer's input / output features,
r the adapter's rank. Inputs are (..., in), outputs (..., out).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from typing import Callable, Iterable

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .trainable_tokens import TOKENS_KEY, TrainableTokens, check_saved_rows, merge_trainable_tokens, trainable_token_ids
from .utils import count_parameters

__all__ = ["LoRALinear", "add_lora", "merge_lora", "lora_layers", "lora_state_dict", "load_lora_state_dict",
           "save_lora", "load_lora", "trainable_parameters", "DEFAULT_TARGETS"]

DEFAULT_TARGETS = ("q_proj", "v_proj")  # the paper's choice: adapt the query and value projections


def _check_hparams(r, alpha, dropout, in_features: int, out_features: int, where: str = "LoRALinear") -> None:
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
        raise ValueError(f"{where}: r (the rank) must be an integer >= 1, got {r!r}")
    if r > min(in_features, out_features):
        raise ValueError(f"{where}: r must be <= min(in_features, out_features) = "
                         f"{min(in_features, out_features)} (a ({out_features}, {in_features}) weight), got r={r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f"{where}: alpha must be a number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{where}: dropout must be in [0, 1), got {dropout!r}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (kept as ``.base``) plus a trainable low-rank update.

    forward(x (..., in)) -> (..., out) = base(x) + dropout(x) @ A^T @ B^T * alpha / r
    lora_A (r, in): Kaiming-uniform, as nn.Linear initialises its weight (the paper draws it
    from a Gaussian: what matters is that A is random and B zero). lora_B (out, r): zeros.
    Dropout acts on the adapter's input only.

    merge() folds the update into base.weight (forward then skips the adapter), unmerge()
    takes it out again, merged_linear() returns a new plain nn.Linear with the merged weight.
    Raises ValueError for r < 1 or r > min(in, out), alpha <= 0, dropout outside [0, 1).
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_hparams(r, alpha, dropout, base.in_features, base.out_features)
        self.base = base
        base.requires_grad_(False)  # weight and bias stay as they are
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha = int(r), float(alpha)
        self.scaling = self.alpha / self.r
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(self.r, base.in_features, **factory))    # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.r, **factory))   # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(float(dropout)) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """ΔW = B A * alpha / r, shaped like base.weight (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)                                                 # (..., out)
        if self.merged:
            return out
        low_rank = self.dropout(x) @ self.lora_A.T                         # (..., in) -> (..., r)
        return out + (low_rank @ self.lora_B.T) * self.scaling             # (..., r) -> (..., out)

    @torch.no_grad()
    def merge(self) -> "LoRALinear":
        """Add ΔW into base.weight; forward then costs what the plain layer costs. No-op if merged.
        The flag is not in the state_dict: to save a merged model, use merge_lora (plain layers)."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True
        return self

    @torch.no_grad()
    def unmerge(self) -> "LoRALinear":
        """Subtract ΔW from base.weight again (exact up to float rounding). No-op if not merged."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False
        return self

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        """A new nn.Linear holding W + ΔW (and the bias); its requires_grad flags are the base's."""
        base = self.base
        linear = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        linear.weight.copy_(base.weight if self.merged else base.weight + self.delta_weight())
        if base.bias is not None:
            linear.bias.copy_(base.bias)
        for name, p in linear.named_parameters():
            p.requires_grad_(getattr(base, name).requires_grad)
        return linear.train(self.training)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}"


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """{qualified name: LoRALinear} for every adapter inside ``model``."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _short_list(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _matcher(targets) -> Callable[[str, nn.Module], bool]:
    if callable(targets):
        return targets
    if isinstance(targets, str):
        targets = (targets,)
    suffixes = tuple(targets)
    if not suffixes or not all(isinstance(s, str) and s for s in suffixes):
        raise ValueError(f"targets must be name suffixes such as {DEFAULT_TARGETS} or a callable(name, module) "
                         f"-> bool, got {targets!r}")
    return lambda name, module: any(name == s or name.endswith("." + s) for s in suffixes)


def _tied_with(model: nn.Module, param: nn.Parameter, own: str) -> list[str]:
    """Other names under which ``param`` appears in ``model`` (weight tying)."""
    return [n for n, p in model.named_parameters(remove_duplicate=False) if p is param and n != own]


def add_lora(model: nn.Module, targets=DEFAULT_TARGETS, r: int = 8, alpha: float = 16.0,
             dropout: float = 0.0) -> list[str]:
    """Replace the matching nn.Linear layers of ``model`` by LoRALinear (in place); freeze all else.

    targets: name suffixes (``("q_proj", "v_proj")`` matches ``blocks.0.self_attn.q_proj``; the
    course's layers are q_proj, k_proj, v_proj, out_proj in attention, linear1 / linear2 in the
    feed-forward network) or a callable(name, module) -> bool. Every parameter that is not an
    adapter's A or B gets requires_grad=False (embeddings, norms, heads: to train a new classifier's
    head too, call model.head.requires_grad_(True) afterwards). Returns the wrapped names.

    Raises ValueError if nothing matches (listing the Linear layers there are), or if a target's
    weight is tied to another parameter (GPT's lm_head shares tok_embed's matrix: merging into
    it would change the embedding too), or for bad r / alpha / dropout (see LoRALinear).
    """
    if isinstance(model, nn.Linear):
        raise ValueError("add_lora replaces layers inside a model; wrap a lone nn.Linear with LoRALinear(linear)")
    match = _matcher(targets)
    inside_adapters = tuple(name + "." for name in lora_layers(model))
    linears = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and not name.startswith(inside_adapters)]
    chosen = [(name, m) for name, m in linears if match(name, m)]
    if not linears:
        raise ValueError(f"add_lora: the model has no nn.Linear layers (it is a {type(model).__name__}): LoRA adapts "
                         "nn.Linear layers only")
    if not chosen:
        kinds = sorted({name.rsplit(".", 1)[-1] for name, _ in linears})
        raise ValueError(f"add_lora: no nn.Linear matches targets={targets!r}. The model's Linear layers end in "
                         f"{kinds} (e.g. {_short_list((n for n, _ in linears), 3)})"
                         + ("; layers that already have adapters are not matched again" if inside_adapters else ""))
    for name, m in chosen:
        _check_hparams(r, alpha, dropout, m.in_features, m.out_features, where=f"add_lora({name!r})")
        tied = _tied_with(model, m.weight, f"{name}.weight")
        if tied:
            raise ValueError(f"add_lora: {name}.weight is tied to {tied[0]} (the same tensor): an adapter merged into "
                             f"it would change {tied[0]} too. Leave {name!r} out of targets.")
    model.requires_grad_(False)
    for name, m in chosen:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, LoRALinear(m, r, alpha, dropout))
    for layer in lora_layers(model).values():  # adapters added earlier stay trainable
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    if isinstance(getattr(model, "trainable_tokens", None), TrainableTokens):  # rows added earlier stay trainable
        model.trainable_tokens.delta.requires_grad_(True)
    return [name for name, _ in chosen]


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear in ``model`` by its merged plain nn.Linear (in place), fold trainable
    token rows (tfmlib.trainable_tokens) into the embedding, and return ``model``: the original
    state_dict keys, the same outputs, no adapter left to compute. (A LoRALinear passed alone is
    returned as its merged nn.Linear.) Parameters stay frozen as they were: call
    model.requires_grad_(True) to train the whole model again."""
    if isinstance(model, LoRALinear):
        return model.merged_linear()
    merge_trainable_tokens(model)
    for name, layer in list(lora_layers(model).items()):
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.merged_linear())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors: {"<layer>.lora_A": (r, in), "<layer>.lora_B": (out, r), ...}, plus
    "trainable_tokens.delta" (k, C) when the model has trainable token rows (add_trainable_tokens)."""
    tensors = {f"{name}.{part}": getattr(layer, part).detach()
               for name, layer in lora_layers(model).items() for part in ("lora_A", "lora_B")}
    if trainable_token_ids(model) is not None:
        tensors[TOKENS_KEY] = model.trainable_tokens.delta.detach()
    return tensors


def load_lora_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor],
                         token_ids: list[int] | None = None) -> None:
    """Copy adapter tensors into ``model``'s LoRALinear layers (built by add_lora with the same targets
    and r), and "trainable_tokens.delta" into its trainable token rows (token_ids: their ids, when known).
    Raises ValueError naming missing keys, unexpected keys and shape mismatches, if a layer is merged
    (unmerge it first: its weight already holds the old adapter), and when the state_dict holds token
    rows but the model has none (call add_trainable_tokens first), or the other way round, or other ids."""
    rows = state_dict.get(TOKENS_KEY)
    check_saved_rows(model, None if rows is None else len(rows), token_ids)
    expected = lora_state_dict(model)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: expected {tuple(expected[k].shape)}, given {tuple(state_dict[k].shape)}"
             for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        problems = [f"missing keys [{_short_list(missing, 4)}]" if missing else "",
                    f"unexpected keys [{_short_list(unexpected, 4)}]" if unexpected else "",
                    f"shape mismatches [{_short_list(wrong, 2)}]" if wrong else ""]
        raise ValueError("these adapters do not fit the model: " + "; ".join(p for p in problems if p)
                         + ". Call add_lora with the targets and r the adapters were trained with.")
    layers = lora_layers(model)
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise ValueError(f"cannot load adapters into merged layers [{_short_list(merged, 3)}]: call unmerge() first")
    with torch.no_grad():
        for key, value in state_dict.items():
            owner = model.trainable_tokens if key == TOKENS_KEY else layers[key.rsplit(".", 1)[0]]
            getattr(owner, key.rsplit(".", 1)[1]).copy_(value)


def save_lora(model: nn.Module, path: str | os.PathLike) -> None:
    """Write the adapters (and each layer's r and alpha) to a .safetensors file: tensors only, no code.
    Trainable token rows are saved too, their ids in the metadata. Raises ValueError without adapters."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to save: call add_lora(model, ...) first")
    config = {name: {"r": layer.r, "alpha": layer.alpha} for name, layer in layers.items()}
    tensors = {k: v.contiguous().cpu() for k, v in lora_state_dict(model).items()}
    metadata = {"format": "tfmlib-lora", "config": json.dumps(config)}
    if trainable_token_ids(model) is not None:
        metadata["token_ids"] = json.dumps(trainable_token_ids(model))
    save_file(tensors, str(path), metadata=metadata)


def load_lora(model: nn.Module, path: str | os.PathLike) -> None:
    """Load adapters written by save_lora into ``model`` (already prepared with add_lora).

    Raises FileNotFoundError, or ValueError when the keys, shapes or alpha do not fit, or the file's
    trainable token rows do not (the file holds rows but the model has none: add_trainable_tokens first)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no adapter file at {path!r}")
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    config = json.loads(metadata.get("config", "{}"))
    token_ids = json.loads(metadata["token_ids"]) if "token_ids" in metadata else None
    layers = lora_layers(model)
    differ = [f"{n}: alpha {c['alpha']:g} in the file, {layers[n].alpha:g} in the model"
              for n, c in config.items() if n in layers and c["alpha"] != layers[n].alpha]
    if differ:
        raise ValueError(f"the adapters in {path!r} were trained with another alpha ({_short_list(differ, 2)}): "
                         "call add_lora with the same alpha")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tensors = load_file(path, device=str(device))
    rows = len(tensors[TOKENS_KEY]) if TOKENS_KEY in tensors else None
    check_saved_rows(model, rows, token_ids, f"the file {path!r}")
    load_lora_state_dict(model, tensors, token_ids)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied weights counted once. Share = trainable / total."""
    return count_parameters(model, trainable_only=True), count_parameters(model, trainable_only=False)
