"""UNIMO-text as two static programs with the key/value cache outside them.

PaddleNLP's own forward cannot be exported for cached decoding (gen_cache
calls `.item()`), computes LM-head logits for every prompt position, and has
no way to drop rows from the cache. So this is a thin forward over the very
same parameters (the paddlenlp UNIMOLMHeadModel is a sublayer and its weights
are what get saved), reproducing op for op paddle.nn.TransformerEncoderLayer
(post-LayerNorm), UNIMOEmbeddings + encoder_norm and UNIMOLMHead:

prompt (input_ids, token_type_ids, position_ids [B, L] int64, attn_mask [B, 1, L, L] f32)
    -> logits of the last position [B, V], then per layer: the prompt's keys and
       values without the start token [B, H, L-1, D], then the start token's [B, H, 1, D]
step   (input_ids, token_type_ids, position_ids [R, 1], prompt_bias [S, L-1],
        parent_index [R], prompt k/v [S, H, L-1, D] x layers, generated k/v [R', H, t, D] x layers)
    -> logits [R, V], generated k/v [R, H, t+1, D] x layers

The prompt part of the cache is kept once per source and never copied by a
step; only the small generated part is gathered by `parent_index` (which row
each new row continues: beam reordering, and finished rows leaving the batch)
and grown. A source's R/S beams attend to its prompt cache as extra query
rows. The prompt's last layer runs only for the last position: the first
generated token needs nothing else, and every layer's keys and values are
computed before that cut.
"""
from __future__ import annotations

import os

PROMPT_PROGRAM = "prompt"
STEP_PROGRAM = "step"


def thin_unimo_layer(model):
    """A paddle.nn.Layer exposing `prompt` and `step` over `model`'s weights."""
    import paddle
    import paddle.nn.functional as F

    config = model.config
    if config.normalize_before:
        raise ValueError("pre-LayerNorm UNIMO (normalize_before=True, e.g. MIRO) is not supported; "
                         "unimo-text checkpoints are post-LayerNorm")
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads

    class ThinUnimo(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.model = model
            self.layers = model.unimo.encoder.layers

        def embed(self, ids, types, positions):
            e = self.model.unimo.embeddings
            x = e.word_embeddings(ids) + e.position_embeddings(positions) + e.token_type_embeddings(types)
            return self.model.unimo.encoder_norm(x)

        def split_heads(self, x, projection):  # [B, S, hidden] -> [B, H, S, D]
            y = paddle.reshape(projection(x), [0, 0, heads, head_dim])
            return paddle.transpose(y, [0, 2, 1, 3])

        def merge_heads(self, x):  # [B, H, S, D] -> [B, S, hidden]
            x = paddle.transpose(x, [0, 2, 1, 3])
            return paddle.reshape(x, [0, 0, heads * head_dim])

        def finish_layer(self, layer, x, attended):
            """Out-projection, residual + norm1, FFN, residual + norm2."""
            x = layer.norm1(x + layer.self_attn.out_proj(self.merge_heads(attended)))
            return layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))

        def lm_head(self, h):
            head = self.model.lm_head
            h = head.layer_norm(head.activation(head.transform(h)))
            return paddle.matmul(h, head.decoder_weight, transpose_y=True) + head.decoder_bias

        def prompt(self, input_ids, token_type_ids, position_ids, attn_mask):
            x = self.embed(input_ids, token_type_ids, position_ids)
            keys_values = []
            last = len(self.layers) - 1
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                k, v = self.split_heads(x, attn.k_proj), self.split_heads(x, attn.v_proj)
                keys_values.append((k, v))
                if i == last:
                    x, attn_mask = x[:, -1:, :], attn_mask[:, :, -1:, :]
                q = self.split_heads(x, attn.q_proj)
                scores = paddle.matmul(q * head_dim ** -0.5, k, transpose_y=True) + attn_mask
                x = self.finish_layer(layer, x, paddle.matmul(F.softmax(scores), v))
            prompt_part = [t[:, :, :-1, :] for kv in keys_values for t in kv]
            start_part = [t[:, :, -1:, :] for kv in keys_values for t in kv]
            return [self.lm_head(x[:, -1, :])] + prompt_part + start_part

        def step(self, input_ids, token_type_ids, position_ids, prompt_bias, parent_index, prompt_cache,
                 generated_cache):
            x = self.embed(input_ids, token_type_ids, position_ids)  # [R, 1, hidden]
            sources = paddle.shape(prompt_cache[0])[0]
            rows = paddle.shape(input_ids)[0]
            beams = rows // sources
            bias = paddle.unsqueeze(prompt_bias, [1, 2])  # [S, 1, 1, Lp]
            grown = []
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                k = paddle.concat([paddle.gather(generated_cache[2 * i], parent_index, axis=0),
                                   self.split_heads(x, attn.k_proj)], axis=2)
                v = paddle.concat([paddle.gather(generated_cache[2 * i + 1], parent_index, axis=0),
                                   self.split_heads(x, attn.v_proj)], axis=2)
                grown += [k, v]
                q = self.split_heads(x, attn.q_proj) * head_dim ** -0.5  # [R, H, 1, D]
                # A source's beams are query rows over its one prompt cache.
                q_by_source = paddle.transpose(paddle.reshape(q, [sources, beams, heads, head_dim]), [0, 2, 1, 3])
                prompt_scores = paddle.matmul(q_by_source, prompt_cache[2 * i], transpose_y=True) + bias
                prompt_len = paddle.shape(prompt_scores)[3]
                prompt_scores = paddle.reshape(paddle.transpose(prompt_scores, [0, 2, 1, 3]),
                                               [rows, heads, 1, prompt_len])
                weights = F.softmax(paddle.concat([prompt_scores, paddle.matmul(q, k, transpose_y=True)], -1))
                prompt_weights = paddle.transpose(
                    paddle.reshape(weights[:, :, :, :prompt_len], [sources, beams, heads, prompt_len]), [0, 2, 1, 3])
                from_prompt = paddle.matmul(prompt_weights, prompt_cache[2 * i + 1])  # [S, H, beams, D]
                from_prompt = paddle.reshape(paddle.transpose(from_prompt, [0, 2, 1, 3]), [rows, heads, 1, head_dim])
                x = self.finish_layer(layer, x, from_prompt + paddle.matmul(weights[:, :, :, prompt_len:], v))
            return [self.lm_head(x[:, -1, :])] + grown

    return ThinUnimo()


def export_unimo_programs(model, model_dir: str) -> None:
    """Save `prompt` and `step` as two Paddle Inference programs under model_dir."""
    import paddle
    from paddle.static import InputSpec

    from predictor.export import save_static

    thin = thin_unimo_layer(model)
    layers = model.config.num_hidden_layers
    heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // heads
    token_specs = [InputSpec([None, None], "int64", name) for name in ("input_ids", "token_type_ids", "position_ids")]
    step_token_specs = [InputSpec([None, 1], "int64", name) for name in ("input_ids", "token_type_ids", "position_ids")]

    def cache_specs(prefix):
        return [InputSpec([None, heads, None, head_dim], "float32", f"{prefix}_{kv}_{i}")
                for i in range(layers) for kv in "kv"]

    class Prompt(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.thin = thin

        def forward(self, input_ids, token_type_ids, position_ids, attn_mask):
            return self.thin.prompt(input_ids, token_type_ids, position_ids, attn_mask)

    class Step(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.thin = thin

        def forward(self, input_ids, token_type_ids, position_ids, prompt_bias, parent_index, prompt_cache,
                    generated_cache):
            return self.thin.step(input_ids, token_type_ids, position_ids, prompt_bias, parent_index,
                                  prompt_cache, generated_cache)

    save_static(Prompt(), token_specs + [InputSpec([None, 1, None, None], "float32", "attn_mask")],
                os.path.join(model_dir, PROMPT_PROGRAM))
    save_static(Step(), step_token_specs + [InputSpec([None, None], "float32", "prompt_bias"),
                                            InputSpec([None], "int64", "parent_index"),
                                            cache_specs("prompt"), cache_specs("generated")],
                os.path.join(model_dir, STEP_PROGRAM))
