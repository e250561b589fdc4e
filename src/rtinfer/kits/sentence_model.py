"""The text kits' model shape: a BERT-style encoder, masked mean pooling, L2 norm, a linear head.

One graph goes from token ids to ``logits`` (B, C) and ``sentence_embedding`` (B, H), the pooled
and normalised vector sentence-transformers computes; optimized variants are judged by its
cosine too. The encoder is any ``transformers`` model built from a config
(``AutoModel.from_config``), so distillation and structured pruning find its layers where they
find MiniLM's (``model.encoder.encoder.layer``). Imports torch: kits import this module only
when they build or load a model.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SentenceClassifier"]


class SentenceClassifier(torch.nn.Module):
    def __init__(self, config: Any, n_labels: int) -> None:
        from transformers import AutoModel

        super().__init__()
        self.encoder = AutoModel.from_config(config)
        self.head = torch.nn.Linear(config.hidden_size, n_labels)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
              attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, token_type_ids=token_type_ids,
                              attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)                       # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)             # (B, H)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.embed(input_ids, token_type_ids, attention_mask)
        # ("embedding" alone would collide with the exporter's names for nn.Embedding ops.)
        return {"logits": self.head(pooled),                      # (B, C)
                "sentence_embedding": pooled}                    # (B, H)
