"""The lesson-11 checks (WordPiece, sentence embeddings, GPT-2's fused c_attn) pass the references,
say "not implemented" for stubs, and fail realistic wrong implementations with the right hint."""
import torch
import torch.nn.functional as F

import tfmlib.checks.pretrained as ck
from tfmlib.wordpiece import wordpiece


def stub(*args, **kwargs):
    raise NotImplementedError("write your code here")


def assert_fails(result, hint_text):
    assert result.status == "failed", repr(result)
    assert hint_text in repr(result), f"expected hint {hint_text!r} in:\n{result!r}"
    assert "Traceback" not in repr(result)


def test_wordpiece_check():
    assert ck.check_wordpiece(wordpiece).passed
    assert ck.check_wordpiece(stub).status == "not implemented"
    assert_fails(ck.check_wordpiece(ck._shortest_first), ck.HINT_WP_SHORTEST)
    assert_fails(ck.check_wordpiece(lambda w, v: ck._variant(w, v, prefix_rest=False)), ck.HINT_WP_NO_HASHES)
    assert_fails(ck.check_wordpiece(lambda w, v: ck._variant(w, v, prefix_first=True)), ck.HINT_WP_HASH_FIRST)
    assert_fails(ck.check_wordpiece(lambda w, v: ck._variant(w, v, partial_unk=True)), ck.HINT_WP_PARTIAL_UNK)
    assert ck.check_wordpiece(lambda w, v: " ".join(wordpiece(w, v))).status == "failed"


def embed(hidden, mask):
    w = mask.float().unsqueeze(-1)
    return F.normalize((hidden * w).sum(1) / w.sum(1), dim=-1)


def test_sentence_embedding_check():
    assert ck.check_sentence_embedding(embed).passed
    assert ck.check_sentence_embedding(stub).status == "not implemented"
    assert_fails(ck.check_sentence_embedding(lambda h, m: F.normalize(h.mean(1), dim=-1)), ck.HINT_SE_PADDING)
    assert_fails(ck.check_sentence_embedding(lambda h, m: embed(h, m) * (h * m.float().unsqueeze(-1)).sum(1).div(
        m.float().sum(1, keepdim=True)).norm(dim=-1, keepdim=True)), ck.HINT_SE_NOT_UNIT)
    assert_fails(ck.check_sentence_embedding(
        lambda h, m: F.normalize((h * m.float().unsqueeze(-1)).sum(1) / m.float().sum(1, keepdim=True), dim=0)),
        ck.HINT_SE_WRONG_AXIS)
    assert_fails(ck.check_sentence_embedding(lambda h, m: F.normalize(h[:, 0], dim=-1)), ck.HINT_SE_CLS)


def split(weight, bias):
    C = weight.shape[0]
    return [(weight.t()[k * C:(k + 1) * C], bias[k * C:(k + 1) * C]) for k in range(3)]


def test_split_c_attn_check():
    assert ck.check_split_c_attn(split).passed
    assert ck.check_split_c_attn(lambda w, b: list(zip(w.t().chunk(3, 0), b.chunk(3)))).passed
    assert ck.check_split_c_attn(stub).status == "not implemented"
    assert_fails(ck.check_split_c_attn(lambda w, b: list(zip(w.chunk(3, 1), b.chunk(3)))), ck.HINT_QKV_NO_TRANSPOSE)
    assert_fails(ck.check_split_c_attn(lambda w, b: [split(w, b)[i] for i in (1, 0, 2)]), ck.HINT_QKV_ORDER)
    C = 4
    assert_fails(ck.check_split_c_attn(
        lambda w, b: [(w.t().reshape(w.shape[0], 3, -1)[:, k], b.reshape(-1, 3)[:, k]) for k in range(3)]),
        ck.HINT_QKV_INTERLEAVED)
    assert_fails(ck.check_split_c_attn(lambda w, b: split(w, b)[:2]), "three (weight, bias) pairs")
