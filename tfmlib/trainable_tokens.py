"""Trainable rows of a frozen token embedding: the new special tokens of a chat template.

A chat template brings tokens that pre-training never saw (their embedding rows are still at their
random initial values), and a fine-tuning task may lean on tokens the pre-training text hardly held.
LoRA (tfmlib.lora) freezes the embedding, and with tied weights the output head too, so those rows
would stay as they are. ``add_trainable_tokens`` lets just those rows train, as a zero-initialised
delta that ``merge_trainable_tokens`` (and tfmlib.lora.merge_lora) folds back into the matrix.

    add_lora(model, targets=..., r=8, alpha=16)                 # freezes everything else
    add_trainable_tokens(model, [user_id, assistant_id, end_id])  # + k rows of C numbers

Shape legend: B batch, T tokens, C model width, V vocabulary, k trainable rows.
Reference: the "trainable_token_indices" option of Hugging Face's PEFT library.
"""
from __future__ import annotations

import numbers
from typing import Iterable

import torch
import torch.nn as nn

__all__ = ["TrainableTokens", "add_trainable_tokens", "merge_trainable_tokens", "trainable_token_ids",
           "check_saved_rows", "TOKENS_KEY"]

TOKENS_KEY = "trainable_tokens.delta"  # the rows' key in tfmlib.lora's adapter state_dicts and files


class TrainableTokens(nn.Module):
    """``delta`` (k, C), zero at first: what training adds to the embedding rows ``token_ids``."""

    def __init__(self, token_ids: Iterable[int], d_model: int):
        super().__init__()
        self.register_buffer("token_ids", torch.tensor(sorted(set(int(i) for i in token_ids)), dtype=torch.long))
        self.delta = nn.Parameter(torch.zeros(len(self.token_ids), d_model))   # (k, C)

    def rows(self, vocab_size: int) -> torch.Tensor:
        """The delta as a full (V, C) matrix: zero except the k trainable rows."""
        return self.delta.new_zeros(vocab_size, self.delta.shape[1]).index_add(0, self.token_ids, self.delta)


class _WithRows(nn.Module):
    """A frozen module that uses the tied (V, C) matrix, plus the trainable rows; ``weight`` stays visible."""

    def __init__(self, frozen: nn.Module, tokens: TrainableTokens):
        super().__init__()
        self.frozen, self.tokens = frozen, tokens

    @property
    def weight(self) -> torch.Tensor:
        return self.frozen.weight


class _EmbeddingWithRows(_WithRows):
    """The frozen embedding, plus the trainable rows: (B, T) -> (B, T, C)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.tokens.rows(self.frozen.weight.shape[0])                   # (V, C)
        return self.frozen(idx) + getattr(self.frozen, "scale", 1.0) * rows[idx]


class _HeadWithRows(_WithRows):
    """The frozen tied output head, plus the trainable rows: (B, T, C) -> (B, T, V)."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        extra = hidden @ self.tokens.delta.T                                   # (B, T, C) @ (C, k) -> (B, T, k)
        return self.frozen(hidden).index_add(-1, self.tokens.token_ids, extra)


def _check_ids(token_ids, V: int) -> list[int]:
    expected = f"token_ids must be a non-empty list of integer ids in [0, {V - 1}]"
    if isinstance(token_ids, torch.Tensor):
        token_ids = token_ids.tolist() if token_ids.ndim == 1 and not token_ids.is_floating_point() else [token_ids]
    if isinstance(token_ids, (str, bytes)) or not isinstance(token_ids, Iterable):
        raise TypeError(f"{expected}, got {type(token_ids).__name__} {token_ids!r:.40}"
                        + (f": write [{token_ids}]" if isinstance(token_ids, numbers.Integral) else ""))
    ids = list(token_ids)
    odd = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
    if odd:
        raise TypeError(f"{expected}, got {type(odd[0]).__name__} {odd[0]!r:.40}"
                        + (" (a token's text: use tokenizer.special_tokens[...] or encode_ordinary for its id)"
                           if isinstance(odd[0], str) else ""))
    if not ids or any(not 0 <= int(i) < V for i in ids):
        raise ValueError(f"{expected}, got {ids}")
    return [int(i) for i in ids]


def add_trainable_tokens(model: nn.Module, token_ids: Iterable[int]) -> TrainableTokens:
    """Let the rows ``token_ids`` of a GPT's tied embedding train, in the input lookup and in the
    output logits; returns the TrainableTokens (also ``model.trainable_tokens``).

    Needs ``model.tok_embed`` tied to ``model.lm_head``, as tfmlib.GPT is by default. Raises
    ValueError otherwise, for an empty list or ids outside the vocabulary, or if the model already
    has some; TypeError when token_ids is not a list of ints (a lone int, strings, floats)."""
    embed, head = getattr(model, "tok_embed", None), getattr(model, "lm_head", None)
    if hasattr(model, "trainable_tokens"):
        raise ValueError("the model already has trainable tokens: merge_trainable_tokens(model) first")
    if embed is None or head is None or head.weight is not embed.weight:
        raise ValueError("add_trainable_tokens needs a model whose lm_head is tied to tok_embed (tfmlib.GPT "
                         "with tie_weights=True)")
    V, C = embed.weight.shape
    ids = _check_ids(token_ids, V)
    tokens = TrainableTokens(ids, C).to(embed.weight.device)
    model.tok_embed, model.lm_head = _EmbeddingWithRows(embed, tokens), _HeadWithRows(head, tokens)
    model.trainable_tokens = tokens
    return tokens


def merge_trainable_tokens(model: nn.Module) -> nn.Module:
    """Fold ``model.trainable_tokens`` into the embedding rows (in place), put the plain embedding and
    head back, and return ``model``: the same outputs, the base model's parameters. No-op without."""
    tokens = getattr(model, "trainable_tokens", None)
    if isinstance(tokens, TrainableTokens):
        model.tok_embed, model.lm_head = model.tok_embed.frozen, model.lm_head.frozen
        with torch.no_grad():
            model.tok_embed.weight[tokens.token_ids] += tokens.delta.to(model.tok_embed.weight.dtype)
        del model.trainable_tokens
    return model


def trainable_token_ids(model: nn.Module) -> list[int] | None:
    """The sorted ids of ``model.trainable_tokens``, or None when the model has no trainable rows."""
    tokens = getattr(model, "trainable_tokens", None)
    return tokens.token_ids.tolist() if isinstance(tokens, TrainableTokens) else None


def check_saved_rows(model: nn.Module, saved_rows: int | None, saved_ids: list[int] | None = None,
                     where: str = "the state_dict") -> None:
    """Raise ValueError unless saved trainable rows fit ``model``'s: saved_rows is k of the saved
    (k, C) delta (None: nothing saved), saved_ids their ids when known (save_lora writes them)."""
    model_ids = trainable_token_ids(model)
    if saved_rows is None and model_ids is None:
        return
    named = f"token ids {saved_ids}" if saved_ids is not None else f"{saved_rows} token ids"
    if model_ids is None:
        raise ValueError(f"{where} holds trainable rows for {named}: call add_trainable_tokens(model, ids) with "
                         "those ids before load_lora")
    if saved_rows is None:
        raise ValueError(f"the model has trainable rows for token ids {model_ids} but {where} holds none: load it "
                         "into a model prepared without add_trainable_tokens")
    if saved_ids is not None and sorted(saved_ids) != model_ids:
        only_saved, only_model = sorted(set(saved_ids) - set(model_ids)), sorted(set(model_ids) - set(saved_ids))
        raise ValueError(f"{where} holds trainable rows for token ids {sorted(saved_ids)}, the model for {model_ids} "
                         f"(only saved: {only_saved}, only in the model: {only_model}): call add_trainable_tokens "
                         "with the ids the adapters were trained with")
    if saved_rows != len(model_ids):
        raise ValueError(f"{where} holds trainable rows for {saved_rows} token ids, the model for {len(model_ids)} "
                         f"({model_ids}): call add_trainable_tokens with the ids the adapters were trained with")
