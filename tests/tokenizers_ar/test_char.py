import pytest
import torch

from plugins.errors import TokenizerError
from tokenizers_ar import CharTokenizer


def fitted(text="hello world", **kw):
    tok = CharTokenizer(**kw)
    tok.fit([text])
    return tok


def test_vocab_is_sorted_and_order_independent():
    a, b = fitted("abcabc"), fitted("cba")
    assert a.chars == b.chars == ["a", "b", "c"]
    assert a.encode("cab").tolist() == [2, 0, 1]


@pytest.mark.parametrize("text", ["", "   \t\t\n", "line\r\nnext", "emoji 🙂 and 漢字", "ü" * 3])
def test_exact_round_trip_on_unicode(text):
    tok = fitted("x" + text)
    assert tok.decode(tok.encode(text)) == text


def test_unseen_character_is_a_clear_error():
    tok = fitted("abc")
    with pytest.raises(TokenizerError, match=r"'z' \(U\+007A\) at position 1.*unk=true"):
        tok.encode("az")


def test_unk_option_maps_unseen_characters():
    tok = fitted("abc", unk=True)
    assert tok.vocab_size == 4
    ids = tok.encode("az🙂")
    assert ids.tolist() == [0, 3, 3]
    assert tok.decode(ids) == "a\ufffd\ufffd"


def test_fixed_vocab_needs_no_fit():
    tok = CharTokenizer(vocab="ba")
    assert tok.is_fitted and tok.encode("ab").tolist() == [0, 1]


def test_unfitted_and_bad_ids_are_errors():
    with pytest.raises(TokenizerError, match="call fit"):
        CharTokenizer().encode("a")
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        fitted("ab").decode(torch.tensor([5]))
    with pytest.raises(TokenizerError, match="encodes str"):
        fitted("ab").encode(123)


def test_long_text_encodes_fast_path_equals_slow_path():
    text = ("To be, or not to be 🙂 " * 2000)
    tok = fitted(text)
    assert tok.encode(text).tolist() == [tok.stoi[c] for c in text]
