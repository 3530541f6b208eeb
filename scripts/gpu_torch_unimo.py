"""PyTorch UNIMO-text LM with greedy decoding over a preallocated key/value
cache: the GPU benchmark's PyTorch peer of the harness's generation.

The arithmetic is that of predictor/generate/unimo_programs.py (PaddleNLP's
UNIMOLMHeadModel): word + position + token-type embeddings then
encoder_norm; post-LayerNorm encoder layers as paddle.nn.TransformerEncoderLayer;
the LM head's transform, activation and layer_norm, then the word embeddings
(tied) plus a bias. Paddle's LayerNorm epsilon is 1e-5 everywhere, its gelu
the exact one.

Decoding as gpt-fast does it: `prefill` once per batch, then
`decode_one_token` per step; the cache (every layer's keys and values) and the
key mask are module buffers of a fixed width, written in place at
`cache_position`, so a step's shapes never change and torch.compile with
CUDA graphs can take `decode_one_token` as it is. Tokens stay on the device
until the batch is done; with every row forced to its full length (eos
banned until --min-new-tokens equals --max-new-tokens) nothing crosses
back between steps. Rows that end early keep being computed, their later
tokens ignored, as generate() does.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scripts.gpu_torch_ernie import Layer

LAYER_NORM_EPSILON = 1e-5  # paddle.nn.LayerNorm's default, used by every UNIMO norm
GENERATED_TOKEN_TYPE = 1   # generate() repeats the start token's type


class UnimoLM(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        if config.get("normalize_before"):
            raise ValueError("pre-LayerNorm UNIMO (normalize_before=True) is not supported; unimo-text is post-LN")
        hidden, vocab = int(config["hidden_size"]), int(config["vocab_size"])
        self.heads = int(config["num_attention_heads"])
        self.activation = {"gelu": F.gelu, "relu": F.relu}[config["hidden_act"]]
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(int(config["max_position_embeddings"]), hidden)
        self.token_type = nn.Embedding(int(config["type_vocab_size"]), hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPSILON)
        self.layers = nn.ModuleList(Layer(hidden, int(config["intermediate_size"]), LAYER_NORM_EPSILON)
                                    for _ in range(int(config["num_hidden_layers"])))
        self.transform = nn.Linear(hidden, hidden)
        self.head_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPSILON)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab))
        for name in ("cache_k", "cache_v", "key_mask"):  # buffers: torch.compile's CUDA graphs keep their addresses
            self.register_buffer(name, None, persistent=False)

    @classmethod
    def from_paddle_weights(cls, config: dict, weights: dict[str, np.ndarray]) -> "UnimoLM":
        """The model holding a UNIMOLMHeadModel state dict (paddle names;
        paddle's Linear weights are [in, out], torch's [out, in])."""
        model = cls(config)

        def put(param: torch.Tensor, array: np.ndarray) -> None:
            if tuple(param.shape) != array.shape:
                raise ValueError(f"weight of shape {array.shape} for a parameter of shape {tuple(param.shape)}")
            param.data.copy_(torch.from_numpy(np.ascontiguousarray(array)))

        def linear(module: nn.Linear, *names: str) -> None:  # several paddle Linears -> one, outputs stacked
            put(module.weight, np.concatenate([weights[f"{n}.weight"] for n in names], axis=1).T)
            put(module.bias, np.concatenate([weights[f"{n}.bias"] for n in names]))

        def norm(module: nn.LayerNorm, name: str) -> None:
            put(module.weight, weights[f"{name}.weight"])
            put(module.bias, weights[f"{name}.bias"])

        put(model.word.weight, weights["unimo.embeddings.word_embeddings.weight"])
        put(model.position.weight, weights["unimo.embeddings.position_embeddings.weight"])
        put(model.token_type.weight, weights["unimo.embeddings.token_type_embeddings.weight"])
        norm(model.embed_norm, "unimo.encoder_norm")
        for i, layer in enumerate(model.layers):
            prefix = f"unimo.encoder.layers.{i}"
            linear(layer.qkv, *(f"{prefix}.self_attn.{p}_proj" for p in "qkv"))
            linear(layer.out, f"{prefix}.self_attn.out_proj")
            linear(layer.ffn1, f"{prefix}.linear1")
            linear(layer.ffn2, f"{prefix}.linear2")
            norm(layer.norm1, f"{prefix}.norm1")
            norm(layer.norm2, f"{prefix}.norm2")
        linear(model.transform, "lm_head.transform")
        norm(model.head_norm, "lm_head.layer_norm")
        put(model.decoder_bias, weights["lm_head.decoder_bias"])
        return model.eval()

    def setup_cache(self, rows: int, width: int) -> None:
        """Keys and values of every layer for `rows` rows of `width`
        positions (prompt and generated), and which of them each row sees."""
        head_dim = self.word.weight.shape[1] // self.heads
        like = self.word.weight
        shape = (len(self.layers), rows, self.heads, width, head_dim)
        self.cache_k = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.cache_v = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.key_mask = torch.zeros((rows, width), dtype=torch.bool, device=like.device)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, hidden] -> [B, H, S, D]
        b, s, hidden = x.shape
        return x.view(b, s, self.heads, hidden // self.heads).transpose(1, 2)

    def finish_layer(self, layer: Layer, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        b, _, s, _ = attended.shape
        x = layer.norm1(x + layer.out(attended.transpose(1, 2).reshape(b, s, -1)))
        return layer.norm2(x + layer.ffn2(self.activation(layer.ffn1(x))))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, hidden] -> fp32 logits [B, V] (the product in the model's dtype)."""
        h = self.head_norm(self.activation(self.transform(x)))
        return (F.linear(h, self.word.weight) + self.decoder_bias).float()

    def prefill(self, ids: torch.Tensor, types: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Left-padded prompts [B, S] (the last position is every row's start
        token), `mask` [B, 1, S, S] boolean (True: may attend) -> the start
        token's logits [B, V]; every layer's keys/values go to cache
        positions 0..S-1 of rows 0..B-1, and the start token's view of them to
        the key mask. The last layer runs on the start token only: nothing
        else is read from it."""
        rows, width = ids.shape
        x = self.embed_norm(self.word(ids) + self.position(positions) + self.token_type(types))
        self.key_mask[:rows] = False
        self.key_mask[:rows, :width] = mask[:, 0, -1]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            q, k, v = (self.split_heads(part) for part in layer.qkv(x).split(x.shape[-1], dim=-1))
            self.cache_k[i, :rows, :, :width] = k
            self.cache_v[i, :rows, :, :width] = v
            if i == last:
                x, q, mask = x[:, -1:], q[:, :, -1:], mask[:, :, -1:]
            x = self.finish_layer(layer, x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        return self.logits(x[:, -1])

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        """One new token per row [B] at `cache_position` ([1]) -> logits [B, V]."""
        rows = tokens.shape[0]
        types = torch.full_like(tokens, GENERATED_TOKEN_TYPE)
        x = self.embed_norm(self.word(tokens) + self.position(positions) + self.token_type(types))[:, None]
        self.key_mask[:rows].index_fill_(1, cache_position, True)
        mask = self.key_mask[:rows, None, None, :]
        for i, layer in enumerate(self.layers):
            q, k, v = (self.split_heads(part) for part in layer.qkv(x).split(x.shape[-1], dim=-1))
            self.cache_k[i, :rows].index_copy_(2, cache_position, k)
            self.cache_v[i, :rows].index_copy_(2, cache_position, v)
            attended = F.scaled_dot_product_attention(q, self.cache_k[i, :rows], self.cache_v[i, :rows], attn_mask=mask)
            x = self.finish_layer(layer, x, attended)
        return self.logits(x[:, 0])


def choose(logits: torch.Tensor, overridden: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Greedy's choice after the logit overrides (ids where `overridden` [V]
    take `values` [V]): argmax, the lowest id on ties, as numpy's."""
    return torch.where(overridden, values, logits).argmax(dim=-1)


def decode_one_token(model: UnimoLM, tokens: torch.Tensor, positions: torch.Tensor, cache_position: torch.Tensor,
                     overridden: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return choose(model.step(tokens, positions, cache_position), overridden, values)


class Overrides:
    """Dense [V] forms of decoding.logit_overrides: (overridden, values)
    before the minimum length (eos forbidden) and after it."""

    def __init__(self, special, vocab: int, device: torch.device):
        from predictor.generate.decoding import logit_overrides

        self.by_forbid_eos = {}
        for forbid_eos in (True, False):
            ids, values = logit_overrides(special, forbid_eos)
            overridden = torch.zeros(vocab, dtype=torch.bool)
            dense = torch.zeros(vocab, dtype=torch.float32)
            overridden[ids], dense[ids] = True, torch.from_numpy(values)
            self.by_forbid_eos[forbid_eos] = (overridden.to(device), dense.to(device))

    def at(self, step: int, min_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.by_forbid_eos[step < min_new_tokens]


def generate(model: UnimoLM, prompt: dict, overrides: Overrides, max_new_tokens: int, min_new_tokens: int,
             eos: int, step_fn=decode_one_token) -> torch.Tensor:
    """Greedy ids [B, max_new_tokens] of one batch of prompts (tensors on the
    model's device: ids, types, positions [B, S], mask [B, 1, S, S]); after a
    row's eos its ids mean nothing. Stops early only when every row has
    ended, which needs the ids on the host: never while eos is banned."""
    rows, width = prompt["ids"].shape
    device = prompt["ids"].device
    out = torch.empty((rows, max_new_tokens), dtype=torch.int64, device=device)
    tokens = choose(model.prefill(prompt["ids"], prompt["types"], prompt["positions"], prompt["mask"]),
                    *overrides.at(0, min_new_tokens))
    out[:, 0] = tokens
    ended = tokens == eos
    for t in range(1, max_new_tokens):
        if t > min_new_tokens and bool(ended.all()):
            out[:, t:] = eos
            break
        # The token chosen at step t-1 is fed at cache position width + t - 1, position t (the start token's is 0).
        cache_position = torch.full((1,), width + t - 1, dtype=torch.int64, device=device)
        positions = torch.full((rows,), t, dtype=torch.int64, device=device)
        tokens = step_fn(model, tokens, positions, cache_position, *overrides.at(t, min_new_tokens)).clone()
        out[:, t] = tokens
        ended |= tokens == eos
    return out
