"""tfmlib.bpe: GPT-2's tokenizer loaded by tfmlib equals tiktoken's "gpt2" encoding built from the same
two files; special tokens; the conventional tie rule in training; streaming; GPT-2's file format."""
import itertools
import random
from collections import Counter

import pytest
import torch

from tfmlib.bpe import GPT2_PATTERN, ByteLevelBPE, gpt2_files, gpt2_tokenizer
from tfmlib.tokenizers import BPETokenizer, story_text

EOT = "<|endoftext|>"
VARIED = [
    "Hello world",
    "didn't we'll you're they've I'm she'd it's DON'T",     # contractions (lower case only in GPT-2)
    "  lots   of    spaces\n\n\n  x\t\ty  ",                  # whitespace runs, tabs, trailing spaces
    "12345 3.14159 1,000,000 -7 2nd 0x1F",                   # numbers
    "naïve café 東京 Ωμέγα straße ﬁne",                      # unicode letters
    "emoji 😀🎉👍🏽 and a ZWJ 👨‍👩‍👧",                            # multi-byte, multi-codepoint
    "a<|endoftext|>b", EOT, f"x  {EOT}  y\n{EOT}{EOT}",      # special tokens in the middle of text
    "", "\n", " ", "'", "''s", "<|endoftext", "|>",
    "def f(x):\n    return x ** 2  # square\n",
    "To be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer\n",
]


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    encoder_json, vocab_bpe = gpt2_files()           # local paths: tiktoken reads them, no download
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json))
    return tiktoken.Encoding(name="gpt2-from-local-files", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: 50256}, explicit_n_vocab=50257)


@pytest.mark.parametrize("text", VARIED)
def test_gpt2_equals_tiktoken(text, tiktoken_gpt2):
    tok = gpt2_tokenizer()
    ids = tok.encode(text, allowed_special="all")
    assert ids == tiktoken_gpt2.encode(text, allowed_special="all")
    assert tok.encode(text, disallowed_special=()) == tiktoken_gpt2.encode(text, disallowed_special=())
    assert tok.decode(ids) == text


def test_gpt2_equals_tiktoken_on_shakespeare(tiktoken_gpt2):
    from tfmlib.data import load_corpus
    text = load_corpus("shakespeare")[:200_000]
    assert gpt2_tokenizer().encode(text) == tiktoken_gpt2.encode_ordinary(text)


def test_gpt2_known_ids():
    tok = gpt2_tokenizer()
    assert tok.vocab_size == 50257 and len(tok.merges) == 50000 and tok.special_tokens == {EOT: 50256}
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.tokens("didn't") == ["didn", "'t"]                       # the contraction rule
    assert ByteLevelBPE.chunks(" a  b\n\n c") == [" a", " ", " b", "\n\n", " c"]


def test_special_tokens_refused_allowed_or_plain():
    tok = gpt2_tokenizer()
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'.*allowed_special"):
        tok.encode(f"hi {EOT}")                                          # refused by default
    assert tok.encode(f"hi{EOT}", allowed_special={EOT}) == tok.encode("hi") + [50256]
    plain = tok.encode(EOT, disallowed_special=())                       # ordinary text: several tokens
    assert len(plain) > 1 and 50256 not in plain and tok.decode(plain) == EOT
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|im_start|>"})
    with pytest.raises(TypeError, match="must be a str"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match=r"\[0, 50256\]"):
        tok.decode([50257])


def test_training_keeps_special_tokens_whole():
    text = f"the cat sat{EOT}the cat sat{EOT}" * 20
    tok = ByteLevelBPE().train(text, vocab_size=300, special_tokens=[EOT])
    assert tok.vocab_size <= 300 and tok.special_tokens == {EOT: tok.vocab_size - 1}
    assert not any(b"<|" in p or b"|>" in p for p in tok.pieces[256:-1])   # never produced by a merge
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(tok.special_tokens[EOT]) == 40 and tok.decode(ids) == text


def naive_conventional_bpe(text, n_merges):
    """Recount everything each step; most frequent pair, ties -> greatest (bytes, bytes)."""
    words = Counter(ByteLevelBPE.chunks(text))
    pieces = [[bytes([b]) for b in w.encode("utf-8")] for w in words]
    freqs = list(words.values())
    merges = []
    for _ in range(n_merges):
        counts = Counter()
        for word, freq in zip(pieces, freqs):
            for pair in zip(word, word[1:]):
                counts[pair] += freq
        if not counts or max(counts.values()) < 2:
            break
        top = max(counts.values())
        best = max(pair for pair in counts if counts[pair] == top)
        merges.append(best)
        for w, word in enumerate(pieces):
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            pieces[w] = out
    return merges


def merged_pairs(tok):
    return [(tok.pieces[a], tok.pieces[b]) for a, b in tok.merges]


def test_ties_go_to_the_greatest_pair_of_byte_strings():
    # chunks "ab", " ab", " cd", " cd": (a,b), (" ",c), (c,d) all occur twice -> (c,d) wins;
    # then (a,b) and (" ",cd) tie at 2 -> (b"a", b"b") > (b" ", b"cd"); then (" ", cd).
    tok = ByteLevelBPE().train("ab ab cd cd", vocab_size=300)
    assert merged_pairs(tok) == [(b"c", b"d"), (b"a", b"b"), (b" ", b"cd")]
    # byte strings, not ids: after merges cd, " x", " cd", the pairs (" x", "cd") and (" x", "d") tie at 2;
    # the merged "cd" has the larger id (256 > 100) but the smaller byte string (b"cd" < b"d")
    tok = ByteLevelBPE().train("cd cd cd cd xcd xcd xd xd", vocab_size=260)
    assert merged_pairs(tok) == [(b"c", b"d"), (b" ", b"x"), (b" ", b"cd"), (b" x", b"d")]


def test_training_equals_the_naive_rule_and_differs_from_smallest_pair():
    text = story_text(600)
    tok = ByteLevelBPE().train(text, vocab_size=256 + 120)
    assert merged_pairs(tok) == naive_conventional_bpe(text, 120)
    smallest_first = BPETokenizer().train(text, vocab_size=256 + 120)
    assert [tok.pieces[256 + k] for k in range(120)] != [bytes(smallest_first.pieces[256 + k]) for k in range(120)]


def test_encode_iterable_streams_exactly():
    tok = gpt2_tokenizer()
    text = f"I'll go  home\n\n  we'll see{EOT}don't  x\n\n\n 1234 ab'c  {EOT}end  "
    rng = random.Random(0)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randrange(1, 25)))
        parts = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        assert list(tok.encode_iterable(parts, allowed_special="all")) == tok.encode(text, allowed_special="all")
        assert list(tok.encode_iterable(parts, disallowed_special=())) == tok.encode(text, disallowed_special=())
    with pytest.raises(ValueError, match="special token"):
        list(tok.encode_iterable(["a <|endof", "text|> b"]))             # refused even when cut in two
    endless = itertools.cycle(["To be, or not to be: that is the question:\n"])
    first = list(itertools.islice(tok.encode_iterable(endless), 1000))   # an endless input still streams
    assert first[:4] == tok.encode("To be, or")


def test_save_and_load_gpt2_format(tmp_path):
    tok = ByteLevelBPE().train(story_text(300), vocab_size=320, special_tokens=[EOT])
    loaded = ByteLevelBPE.from_gpt2_files(*tok.save_gpt2_files(tmp_path))
    text = story_text(20, seed=3) + EOT
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert loaded.pieces == tok.pieces and loaded.merges == tok.merges


def test_bad_training_input():
    with pytest.raises(ValueError, match="vocab_size must be an int >= 256 \\+ 1"):
        ByteLevelBPE().train("abc", vocab_size=256, special_tokens=[EOT])
    with pytest.raises(ValueError, match="non-empty str"):
        ByteLevelBPE().train("", vocab_size=300)
    with pytest.raises(ValueError, match="min_frequency must be an int >= 1, got 0"):
        ByteLevelBPE().train("abab", vocab_size=300, min_frequency=0)


@pytest.mark.parametrize("ids, error, match", [
    ("hello", TypeError, r"ids must be a list of ints or a 1-D tensor of token ids, got a str 'hello'"),
    (torch.zeros(2, 3, dtype=torch.long), ValueError, r"got shape \(2, 3\): decode each row"),
    ([1.5], TypeError, "got an element of type float"),
    (7, TypeError, "got int"),
])
def test_decode_wants_a_list_of_ints_or_a_1d_tensor(ids, error, match):
    tok = ByteLevelBPE().train("abc abd abe " * 5, vocab_size=260)
    assert tok.decode([97, 98]) == "ab"
    assert tok.decode(torch.tensor([97, 98])) == tok.decode(list(torch.tensor([97, 98]))) == "ab"
    with pytest.raises(error, match=match):
        tok.decode(ids)
