"""Recurrent language models (character or word level) built from QuantLSTM / QuantGRU."""

from __future__ import annotations

import torch
from torch import nn

from qnnlab.nn import QuantGRU, QuantLSTM


class RNNLanguageModel(nn.Module):
    """Embedding -> LSTM/GRU (num_layers) -> dropout -> Linear decoder over the vocabulary.

    The recurrent layer is a QuantLSTM/QuantGRU whose weight, input and state quantizers the
    quantization rules set; the embedding and decoder are the "first and last layer".
    ``forward(tokens (B, T), state) -> (logits (B, T, V), state)``.
    """

    def __init__(
        self, vocab: int, cell: str = "lstm", embed: int = 128, hidden: int = 512, layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell={cell!r}; use lstm or gru")
        self.embedding = nn.Embedding(vocab, embed)
        rnn = QuantLSTM if cell == "lstm" else QuantGRU
        self.rnn = rnn(embed, hidden, num_layers=layers, batch_first=True, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor, state=None):
        out, state = self.rnn(self.embedding(tokens), state)
        return self.decoder(self.drop(out)), state
