"""The chat-template check (lesson 12) passes the solution and names each typical mistake."""
import pytest

import tfmlib.checks.finetune as ck
from helpers import assert_fails, stub


def chat_good(messages, tokenizer):
    ids = []
    for m in messages:
        ids.append(tokenizer.special_tokens[f"<|{m['role']}|>"])
        ids += tokenizer.encode_ordinary(m["content"])
        ids.append(tokenizer.special_tokens["<|end|>"])
    return ids


def _variant(**mistake):
    def chat(messages, tokenizer):
        sp = tokenizer.special_tokens
        roles = {"user": sp["<|user|>"], "assistant": sp["<|assistant|>"]}
        if mistake.get("swap"):
            roles = {"user": roles["assistant"], "assistant": roles["user"]}
        ids = []
        for m in messages:
            content = (tokenizer.encode(m["content"], allowed_special="all") if mistake.get("specials")
                       else tokenizer.encode_ordinary(m["content"]))
            if mistake.get("newline"):
                content = tokenizer.encode_ordinary("\n") + content
            end = [] if mistake.get("no_end") else [sp["<|end|>"]]
            role = [] if mistake.get("no_role") else [roles[m["role"]]]
            ids += role + (end + content if mistake.get("end_first") else content + end)
        if mistake.get("generation_prompt"):
            ids.append(sp["<|assistant|>"])
        if mistake.get("text"):
            return tokenizer.decode(ids)
        return ids
    return chat


def test_solution_passes():
    result = ck.check_chat_ids(chat_good)
    assert result.passed and "4 cases" in result.message


@pytest.mark.parametrize("mistake, hint", [
    ("no_end", ck.HINT_NO_END), ("no_role", ck.HINT_NO_ROLE), ("swap", ck.HINT_ROLE_SWAPPED),
    ("end_first", ck.HINT_END_BEFORE_CONTENT), ("specials", ck.HINT_SPECIALS_IN_CONTENT),
    ("generation_prompt", ck.HINT_GENERATION_PROMPT), ("newline", ck.HINT_SEPARATOR), ("text", ck.HINT_RETURN_IDS),
])
def test_mistakes_get_their_hint(mistake, hint):
    assert_fails(ck.check_chat_ids(_variant(**{mistake: True})), hint)


def test_injection_is_caught_only_by_the_injection_case():
    result = ck.check_chat_ids(_variant(specials=True))
    assert "a user who types special tokens" in result.message


def test_stub_and_crash():
    assert ck.check_chat_ids(stub).status == "not implemented"

    def crashes(messages, tokenizer):
        return [tokenizer.special_tokens["<|system|>"]]
    result = ck.check_chat_ids(crashes)
    assert result.status == "failed" and "KeyError" in result.message


def _names_as_text(end=False, role=False):
    """Encodes the special tokens' NAMES as ordinary text: the ids decode to the same text."""
    def chat(messages, tokenizer):
        sp, ids = tokenizer.special_tokens, []
        for m in messages:
            name = f"<|{m['role']}|>"
            ids += tokenizer.encode_ordinary(name) if role else [sp[name]]
            ids += tokenizer.encode_ordinary(m["content"])
            ids += tokenizer.encode_ordinary("<|end|>") if end else [sp["<|end|>"]]
        return ids
    return chat


@pytest.mark.parametrize("end, role, hint", [
    (True, False, "<|end|> is ONE id: tokenizer.special_tokens['<|end|>'], not the text '<|end|>' encoded"),
    (False, True, ck.HINT_ROLE_AS_TEXT), (True, True, ck.HINT_ROLE_AS_TEXT),
])
def test_special_token_names_encoded_as_text(end, role, hint):
    result = ck.check_chat_ids(_names_as_text(end=end, role=role))
    assert_fails(result, hint)
    assert "decode to the same text" in result.message


def test_failure_shows_the_ids_around_the_first_difference():
    result = ck.check_chat_ids(_variant(no_end=True))
    tok = ck._tokenizer()
    end = tok.special_tokens["<|end|>"]
    assert "expected ids [" in result.message and ", given [" in result.message
    expected_part = result.message.split("expected ids ")[1].split(", given")[0]
    assert str(end) in expected_part
