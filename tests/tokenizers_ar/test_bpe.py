import datasets
import pytest
import torch

from pipelines.data.sources import tokenize
from plugins.errors import TokenizerError
from tests.conftest import need_shakespeare
from tokenizers_ar import BPETokenizer


@pytest.fixture(scope="module")
def bpe():
    tok = BPETokenizer(vocab_size=400)
    tok.fit([need_shakespeare().read_text()[:200_000]])
    return tok


@pytest.mark.parametrize("text", [
    "", " ", "   \t\t  \t", "line\r\nnext\r\n", "tabs\tand\ttabs", "emoji 🙂🎉 and 🇺🇳",
    "漢字かなカナ한국어", "never in training: ∑ ∫ 𝔘 ß ø", "First Citizen:\nBefore we proceed",
])
def test_exact_round_trip_on_any_unicode(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert ids.numel() == 0 or ids.max() < bpe.vocab_size


def test_merges_compress_and_specials_are_first(bpe):
    text = need_shakespeare().read_text()[:20_000]
    assert bpe.vocab_size == 400 and (bpe.eos_id, bpe.pad_id) == (0, 1)
    assert len(text) / bpe.encode(text).numel() > 1.5  # merges learned from the data
    assert bpe.decode([bpe.eos_id]) == "<|endoftext|>"
    assert bpe.unit_counts("héllo") == {"char": 5, "byte": 6}


def test_documents_are_separated_by_eos(bpe, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKAR_CACHE_DIR", str(tmp_path))
    docs = ["To be, or not to be", "that is the question"]
    splits = datasets.DatasetDict(train=datasets.Dataset.from_dict({"example": docs}))
    stream = tokenize(splits, bpe)["train"].tokens
    a, b = (bpe.encode(d).tolist() for d in docs)
    assert stream.tolist() == a + [bpe.eos_id] + b


def test_saved_as_tokenizer_json_loadable_outside_tokar(bpe, tmp_path):
    bpe.save(tmp_path / "tok")
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert hf.encode("Hello 🙂").ids == bpe.encode("Hello 🙂").tolist()
    loaded = BPETokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.fingerprint() == bpe.fingerprint()
    other = BPETokenizer(vocab_size=300)
    other.fit(["something else entirely " * 50])
    assert other.fingerprint() != bpe.fingerprint()


def test_errors(bpe):
    with pytest.raises(TokenizerError, match="not fitted"):
        BPETokenizer().encode("x")
    with pytest.raises(TokenizerError, match="ids must lie"):
        bpe.decode(torch.tensor([400]))
