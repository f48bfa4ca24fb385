"""Supervised fine-tuning (SFT): a chat template on the tokenizer's special tokens, targets with the
loss masked to the responses, the course's instruction data, and exact-match accuracy.

    tok = ByteLevelBPE().train(text, vocab_size=512, special_tokens=CHAT_SPECIAL_TOKENS)
    chat = ChatTemplate(tok)
    ids, trained = chat.encode([{"role": "user", "content": "Sort 3141"},
                                {"role": "assistant", "content": "1134"}])
    inputs, targets = sft_targets(torch.tensor([ids]), torch.tensor([trained]))   # (1, T-1) each

One conversation is laid out as (each <|...|> is ONE token id, never produced from text):

    <|user|>Sort 3141<|end|><|assistant|>1134<|end|><|user|>...<|end|><|assistant|>...<|end|>

The model is trained on the assistant's content and on the <|end|> that closes it (so it learns
to stop); user turns, role tokens and padding are context only. Message contents are encoded
as plain text, so a user who types "<|assistant|>" cannot forge a turn.

Shape legend: B batch, T tokens of a (padded) conversation.
References: Ouyang et al. (2022), "Training language models to follow instructions with human
feedback" (InstructGPT: SFT as the first step); chat templates as in Hugging Face tokenizers'
``apply_chat_template``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from .bpe import id_list
from .tasks import Instruction
from .utils import check_tensor

__all__ = ["CHAT_SPECIAL_TOKENS", "IGNORE_INDEX", "ChatTemplate", "sft_targets", "sft_labels", "sft_batch",
           "exact_match", "generate_responses", "generate_response", "well_formed"]

CHAT_SPECIAL_TOKENS = ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>")
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index
ROLES = ("user", "assistant")


class ChatTemplate:
    """Turns messages [{"role": "user" | "assistant", "content": str}, ...] into token ids.

    ``tokenizer`` needs ``encode_ordinary``, ``decode`` and the special tokens of
    CHAT_SPECIAL_TOKENS (a tfmlib.bpe.ByteLevelBPE trained with them); <|endoftext|> pads.
    Raises TypeError for something that is not a tokenizer, ValueError naming what is missing or malformed.
    """

    def __init__(self, tokenizer):
        if not all(hasattr(tokenizer, a) for a in ("encode_ordinary", "decode", "special_tokens")):
            raise TypeError("ChatTemplate needs a tokenizer with encode_ordinary, decode and special_tokens (a "
                            "tfmlib.bpe.ByteLevelBPE trained with special_tokens=CHAT_SPECIAL_TOKENS), got "
                            f"{type(tokenizer).__name__}")
        specials = tokenizer.special_tokens
        missing = [s for s in CHAT_SPECIAL_TOKENS if s not in specials]
        if missing:
            raise ValueError(f"the tokenizer lacks the special tokens {missing}: train it with "
                             f"special_tokens=CHAT_SPECIAL_TOKENS (it has {sorted(specials)})")
        self.tokenizer = tokenizer
        self.pad_id, self.user_id, self.assistant_id, self.end_id = (specials[s] for s in CHAT_SPECIAL_TOKENS)
        self._role_ids = {"user": self.user_id, "assistant": self.assistant_id}

    @staticmethod
    def _check_messages(messages) -> None:
        if not isinstance(messages, (list, tuple)) or not messages:
            raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or set(message) != {"role", "content"}:
                raise ValueError(f"message {i} must be a dict with exactly the keys 'role' and 'content', "
                                 f"got {message!r:.80}")
            if message["role"] not in ROLES:
                raise ValueError(f"message {i}: role must be one of {ROLES}, got {message['role']!r}")
            if not isinstance(message["content"], str):
                raise ValueError(f"message {i}: content must be a str, got {type(message['content']).__name__}")
            if message["role"] != ROLES[i % 2]:
                raise ValueError(f"roles must alternate user, assistant, user, ...: message {i} is "
                                 f"{message['role']!r}, expected {ROLES[i % 2]!r}")

    def encode(self, messages, add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
        """(ids, trained): ``trained[t]`` is True for the assistant's tokens and their closing <|end|>.

        add_generation_prompt=True appends <|assistant|> after a final user message: the prompt
        the model continues at inference time.
        """
        self._check_messages(messages)
        if add_generation_prompt and messages[-1]["role"] != "user":
            raise ValueError("add_generation_prompt=True needs the last message to be the user's, got "
                             f"{messages[-1]['role']!r} (message {len(messages) - 1})")
        ids, trained = [], []
        for message in messages:
            content = self.tokenizer.encode_ordinary(message["content"])   # specials in text stay text
            is_reply = message["role"] == "assistant"
            ids += [self._role_ids[message["role"]], *content, self.end_id]
            trained += [False] + [is_reply] * (len(content) + 1)
        if add_generation_prompt:
            ids.append(self.assistant_id)
            trained.append(False)
        return ids, trained

    def prompt(self, user_text: str) -> list[int]:
        """The ids a model continues to answer one user message: <|user|>...<|end|><|assistant|>."""
        return self.encode([{"role": "user", "content": user_text}], add_generation_prompt=True)[0]

    def render(self, messages, add_generation_prompt: bool = False) -> str:
        """The conversation as text, special tokens written out (for reading, not for encoding)."""
        return self.tokenizer.decode(self.encode(messages, add_generation_prompt)[0])

    def decode(self, ids: Sequence[int]) -> list[dict]:
        """Messages back from ids (a list of ints or a 1-D tensor; the inverse of ``encode``); an unfinished
        last turn is kept as is. Raises TypeError / ValueError for other ids or ids that are no conversation."""
        messages, role, content = [], None, []
        for i in id_list(ids, "ChatTemplate.decode"):
            if i in (self.user_id, self.assistant_id):
                if role is not None:
                    raise ValueError("a role token inside an unfinished turn: the ids are not a conversation")
                role, content = ("user" if i == self.user_id else "assistant"), []
            elif i == self.end_id:
                if role is None:
                    raise ValueError("<|end|> outside a turn: the ids are not a conversation")
                messages.append({"role": role, "content": self.tokenizer.decode(content)})
                role = None
            elif i == self.pad_id:
                continue
            elif role is None:
                raise ValueError(f"token {i} outside a turn: a conversation starts with <|user|>")
            else:
                content.append(i)
        if role is not None and (content or role == "assistant"):
            messages.append({"role": role, "content": self.tokenizer.decode(content)})
        return messages


def sft_targets(ids: torch.Tensor, trained: torch.Tensor,
                ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, T), trained (B, T) bool -> inputs (B, T-1), targets (B, T-1).

    ``targets[b, t] = ids[b, t + 1]`` where token t + 1 is trained (a response token), else
    ignore_index: position t predicts the next token, and only responses count in the loss.
    Raises TypeError / ValueError for other types, dtypes or shapes.
    """
    check_tensor(ids, "ids (B, T)", ndim=2, dtype_kind="int")
    check_tensor(trained, "trained (B, T)")
    if trained.shape != ids.shape or trained.dtype != torch.bool:
        raise ValueError(f"ids (B, T) and a bool mask trained (B, T) of the same shape are expected, got "
                         f"{tuple(ids.shape)} and {tuple(trained.shape)} {trained.dtype}")
    inputs, targets = ids[:, :-1], ids[:, 1:]                       # (B, T-1): token t predicts t + 1
    return inputs, targets.masked_fill(~trained[:, 1:], ignore_index)


def sft_labels(ids: torch.Tensor, prompt_lens: torch.Tensor, pad_id: int = 0,
               ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """One turn: ids (B, T) = prompt + response + padding, prompt_lens (B,) -> inputs, targets (B, T-1).

    Token t + 1 is trained when it is past the prompt (t + 1 >= prompt_len) and not padding.
    Raises TypeError when ids or prompt_lens is not an integer tensor (a python int or list),
    ValueError when ids is not (B, T) or prompt_lens not (B,).
    """
    check_tensor(ids, "ids (B, T)", ndim=2, dtype_kind="int")
    check_tensor(prompt_lens, "prompt_lens (B,)", ndim=1, dtype_kind="int")
    if len(prompt_lens) != len(ids):
        raise ValueError(f"prompt_lens must hold one length per row of ids: expected shape ({len(ids)},), got "
                         f"{tuple(prompt_lens.shape)}")
    position = torch.arange(ids.shape[1], device=ids.device)[None, :]  # (1, T)
    trained = (position >= prompt_lens[:, None]) & (ids != pad_id)  # (B, T)
    return sft_targets(ids, trained, ignore_index)


# --------------------------------------------------------------------------- batches and scores (the data: tfmlib.tasks)

def _check_list(items, item_type: type, where: str, name: str, empty_ok: bool = False) -> None:
    """``items`` must be a (non-empty) list of ``item_type``: a TypeError / ValueError names what was given."""
    expected = f"{where}: {name} must be a {'' if empty_ok else 'non-empty '}list of " + (
        "Instruction(kind, prompt, response) (see instruction_data)" if item_type is Instruction else "str")
    if isinstance(items, (str, Instruction)) or not isinstance(items, Sequence):
        fix = {str: f": write [{items!r:.40}] or use generate_response", Instruction: ": wrap a single one in a "
               "list, [example]"}[item_type] if isinstance(items, item_type) else ""
        raise TypeError(f"{expected}, got {type(items).__name__} {items!r:.40}{fix}")
    if not items and not empty_ok:
        raise ValueError(f"{expected}, got an empty one")
    odd = next((e for e in items if not isinstance(e, item_type)), None)
    if odd is not None:
        raise TypeError(f"{expected}, got an element of type {type(odd).__name__}: {odd!r:.60}"
                        + (" (pass example.prompt)" if isinstance(odd, Instruction) else ""))


def sft_batch(template: ChatTemplate, examples: Sequence[Instruction], mask_prompt: bool = True,
              device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded (inputs (B, T-1), targets (B, T-1)) for single-turn examples.

    mask_prompt=False trains on every real token (the prompt too): the ablation without the loss
    mask. Padding (<|endoftext|>) is never a target. Raises TypeError unless examples is a list of
    Instruction, ValueError when it is empty.
    """
    _check_list(examples, Instruction, "sft_batch", "examples")
    rows = [template.encode([{"role": "user", "content": e.prompt},
                             {"role": "assistant", "content": e.response}]) for e in examples]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), template.pad_id, dtype=torch.long)
    trained = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, (row_ids, row_trained) in enumerate(rows):
        ids[b, :len(row_ids)] = torch.tensor(row_ids)
        trained[b, :len(row_ids)] = torch.tensor(row_trained) if mask_prompt else True
    inputs, targets = sft_targets(ids, trained)
    return inputs.to(device), targets.to(device)


@torch.no_grad()
def exact_match(model, template: ChatTemplate, examples: Sequence[Instruction],
                batch_size: int = 512) -> dict[str, float]:
    """Share of examples whose response greedy decoding reproduces exactly: {kind: share, "all": share}.

    Computed with ONE teacher-forced pass: greedy decoding writes the reference response (and its
    <|end|>) if and only if the argmax is right at every response position, given the right prefix.
    Raises TypeError unless examples is a list of Instruction, ValueError when it is empty.
    """
    _check_list(examples, Instruction, "exact_match", "examples")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = []
    for start in range(0, len(examples), batch_size):
        inputs, targets = sft_batch(template, examples[start:start + batch_size], device=device)
        predicted = model(inputs).argmax(-1)                         # (B, T-1)
        correct += ((predicted == targets) | (targets == IGNORE_INDEX)).all(-1).tolist()
    model.train(was_training)
    by_kind = defaultdict(list)
    for example, ok in zip(examples, correct):
        by_kind[example.kind].append(ok)
    shares = {kind: sum(oks) / len(oks) for kind, oks in sorted(by_kind.items())}
    shares["all"] = sum(correct) / len(correct)
    return shares


@torch.no_grad()
def generate_responses(model, template: ChatTemplate, user_texts: Sequence[str],
                       max_new_tokens: int = 8) -> list[tuple[str, bool]]:
    """Greedy answers to user messages: [(reply text, stopped at <|end|>)], in order.

    Prompts with the same number of tokens run as one batch; a reply ends at its first <|end|>
    (or after max_new_tokens, then stopped is False). Raises TypeError unless user_texts is a list
    of str (a single str: wrap it in a list, or use generate_response), ValueError when a prompt plus
    max_new_tokens exceeds the model's max_len.
    """
    _check_list(user_texts, str, "generate_responses", "user_texts", empty_ok=True)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompts = [template.prompt(text) for text in user_texts]
    by_length = defaultdict(list)
    for i, ids in enumerate(prompts):
        by_length[len(ids)].append(i)
    replies: list[tuple[str, bool]] = [("", False)] * len(prompts)
    for rows in by_length.values():
        ids = torch.tensor([prompts[i] for i in rows], device=device)             # (B, T_prompt)
        if ids.shape[1] + max_new_tokens > model.config.max_len:
            raise ValueError(f"prompt of {ids.shape[1]} tokens + {max_new_tokens} new ones exceed the model's "
                             f"max_len={model.config.max_len}")
        generated = model.generate(ids, max_new_tokens, temperature=0)[:, ids.shape[1]:]  # (B, max_new_tokens)
        for i, row in zip(rows, generated.tolist()):
            stopped = template.end_id in row
            row = row[:row.index(template.end_id)] if stopped else row
            replies[i] = (template.tokenizer.decode(row), stopped)
    model.train(was_training)
    return replies


def well_formed(example: Instruction, reply: str, stopped: bool) -> bool:
    """Does a reply have the right FORMAT for its instruction, right or wrong: only digits, as many as
    the answer needs (one, or all of them for "sort"), then <|end|>."""
    return stopped and reply.isdigit() and len(reply) == len(example.response)


def generate_response(model, template: ChatTemplate, user_text: str, max_new_tokens: int = 20) -> str:
    """Greedy answer to one user message, stopped at <|end|> (or after max_new_tokens)."""
    return generate_responses(model, template, [user_text], max_new_tokens)[0][0]
