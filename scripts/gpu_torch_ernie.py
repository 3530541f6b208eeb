"""PyTorch ERNIE 3.0 medium classifier of the benchmark graph's shape, for
the GPU benchmark's PyTorch sides (random weights: speed does not depend on
them).

Post-LayerNorm encoder as PaddleNLP's (6 layers, hidden 768, 12 heads, ffn
3072, gelu), attention through scaled_dot_product_attention (a boolean
padding mask, or none for batches without padding). With `cls_only_last`
the last layer computes queries, attention output and feed-forward for the
[CLS] position only, as the harness's exported program does, so both sides
do the same arithmetic; without it, every position (PaddleNLP's model as is).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ERNIE_MEDIUM_SHAPE = dict(hidden=768, layers=6, heads=12, ffn=3072, positions=2048, types=4, labels=2)
LAYER_NORM_EPSILON = 1e-12


class Layer(nn.Module):
    """A post-LayerNorm encoder layer's parameters, q/k/v as one Linear
    (scripts/gpu_torch_unimo.py's UNIMO layers too, with Paddle's epsilon)."""

    def __init__(self, hidden: int, ffn: int, eps: float = LAYER_NORM_EPSILON):
        super().__init__()
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.ffn1 = nn.Linear(hidden, ffn)
        self.ffn2 = nn.Linear(ffn, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=eps)


class ErnieClassifier(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, heads: int, ffn: int, positions: int, types: int,
                 labels: int, cls_only_last: bool = True):
        super().__init__()
        self.heads, self.cls_only_last = heads, cls_only_last
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(positions, hidden)
        self.token_type = nn.Embedding(types, hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPSILON)
        self.layers = nn.ModuleList(Layer(hidden, ffn) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, labels)
        for module in self.modules():  # PaddleNLP's init: normal(0, 0.02) weights, zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, hidden] -> [B, H, S, D]
        b, s, hidden = x.shape
        return x.view(b, s, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                real: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities; `real` is the [rows, width] boolean mask of
        real tokens (None: no padding in the batch)."""
        width = input_ids.shape[1]
        positions = torch.arange(width, device=input_ids.device)
        x = self.embed_norm(self.word(input_ids) + self.position(positions)[None] + self.token_type(token_type_ids))
        mask = real[:, None, None, :] if real is not None else None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            hidden = x.shape[-1]
            if i == last and self.cls_only_last:
                kv = F.linear(x, layer.qkv.weight[hidden:], layer.qkv.bias[hidden:])
                k, v = self.split_heads(kv[..., :hidden]), self.split_heads(kv[..., hidden:])
                x = x[:, :1]
                q = self.split_heads(F.linear(x, layer.qkv.weight[:hidden], layer.qkv.bias[:hidden]))
            else:
                q, k, v = (self.split_heads(part) for part in layer.qkv(x).split(hidden, dim=-1))
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            attended = attended.transpose(1, 2).reshape(x.shape[0], x.shape[1], hidden)
            x = layer.norm1(x + layer.out(attended))
            x = layer.norm2(x + layer.ffn2(F.gelu(layer.ffn1(x))))
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return torch.softmax(self.head(pooled).float(), dim=-1)


def ernie_medium(vocab: int, device: str, dtype: torch.dtype, cls_only_last: bool = True,
                 seed: int = 0) -> ErnieClassifier:
    torch.manual_seed(seed)
    model = ErnieClassifier(vocab, **ERNIE_MEDIUM_SHAPE, cls_only_last=cls_only_last)
    return model.to(device=device, dtype=dtype).eval()
