"""tfmlib.wordpiece: BERT's WordPiece on MiniLM's vocab.txt equals transformers' BertTokenizer and
the ``tokenizers`` library's BertWordPieceTokenizer, piece for piece and id for id."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from tfmlib.pretrained import minilm_directory
from tfmlib.wordpiece import WordPieceTokenizer, basic_tokenize, is_punctuation, wordpiece

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Hello, world!",
    "The Transformer's attention: softmax(QK^T / sqrt(d_k)) V.",
    "unaffable antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "Café, naïve, résumé, Ångström, façade — and ÉCOLE in capitals.",
    "日本語のテキストと中文字符 mixed with English.",
    "한국어 텍스트도 있습니다",
    "Ελληνικά, русский текст, العربية",
    "emoji 🙂🚀 and symbols © ® ™ ≥ ≤ ∑ €100 $5.99 50% #hashtag @user",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "control\x00chars\x07 and a zero\u200bwidth space, soft\u00adhyphen",
    "https://example.com/path?q=1&x=2 mail@example.org",
    "The [MASK] sat on the mat. [SEP] Second [CLS] part",
    "x" * 120 + " is too long for one word",
    "Numbers: 3.14159, 2,718 and 1e-12; dates 2024-05-01.",
    "",
    "   ",
    "a",
]


@pytest.fixture(scope="module")
def vocab_file():
    return minilm_directory() / "vocab.txt"


@pytest.fixture(scope="module")
def mine(vocab_file):
    return WordPieceTokenizer.from_vocab_file(vocab_file)


def test_equals_bert_tokenizer(mine, vocab_file):
    reference = transformers.BertTokenizer(str(vocab_file), do_lower_case=True)
    for text in TEXTS:
        assert mine.tokenize(text) == reference.tokenize(text), text
        assert mine.encode(text) == reference.encode(text), text
    pair = mine.encode("first sentence", "second one")
    assert pair == reference.encode("first sentence", "second one")


def test_equals_hf_tokenizers_bert_wordpiece(mine, vocab_file):
    tokenizers = pytest.importorskip("tokenizers")
    fast = tokenizers.BertWordPieceTokenizer(str(vocab_file), lowercase=True)
    for text in TEXTS:
        if "[" in text:  # the fast tokenizer only keeps special tokens whole once they are registered
            continue
        assert mine.encode(text) == fast.encode(text).ids, text


def test_cased_tokenizer_equals_reference(vocab_file):
    mine = WordPieceTokenizer.from_vocab_file(vocab_file, lowercase=False)
    reference = transformers.BertTokenizer(str(vocab_file), do_lower_case=False)
    for text in TEXTS:
        assert mine.tokenize(text) == reference.tokenize(text), text


def test_batch_padding_and_token_types_equal_reference(mine, vocab_file):
    reference = transformers.BertTokenizer(str(vocab_file))
    texts, pairs = ["A short one.", "A much longer sentence than the first."], ["Yes.", "No, not at all."]
    batch = mine(texts, pairs=pairs)
    expected = reference(texts, pairs, padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], expected[key]), key
    single = mine(texts)
    expected = reference(texts, padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(single[key], expected[key]), key


def test_the_two_stages_by_hand():
    assert basic_tokenize("Héllo,World!! 中文") == ["hello", ",", "world", "!", "!", "中", "文"]
    assert basic_tokenize("Héllo", lowercase=False) == ["Héllo"]
    assert all(is_punctuation(c) for c in "$+^`~,.!¿—") and not any(is_punctuation(c) for c in "a1 é")
    vocab = {"un": 0, "##aff": 1, "##able": 2, "##a": 3, "a": 4, "[UNK]": 5}
    assert wordpiece("unaffable", vocab) == ["un", "##aff", "##able"]   # longest match first
    assert wordpiece("unaffablex", vocab) == ["[UNK]"]                  # a part cannot be covered
    assert wordpiece("a" * 101, vocab) == ["[UNK]"]                     # longer than max_chars


def test_decode_and_errors(mine, tmp_path):
    ids = mine.encode("Tokenization is unaffable!")
    assert mine.decode(ids) == "tokenization is unaffable !"
    assert mine.convert_ids_to_tokens(ids)[:3] == ["[CLS]", "token", "##ization"]
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        WordPieceTokenizer.from_vocab_file(tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match=r"lacks the special token\(s\) \['\[UNK\]'"):
        WordPieceTokenizer(["[CLS]", "[SEP]", "[PAD]", "a"])
    with pytest.raises(TypeError, match="text must be a str"):
        mine.tokenize(3)
    with pytest.raises(ValueError, match="pairs must match texts"):
        mine(["a", "b"], pairs=["c"])
