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
        generated_bias [R, W], prompt k/v [S, H, L-1, D] x layers,
        generated k/v [R, H, W, D] x layers)
    -> logits [R, V], this token's k/v [R, H, 1, D] x layers

The prompt part of the cache is kept once per source and never copied by a
step; a source's R/S beams attend to it as extra query rows. The generated
part is a buffer of W positions that the caller fills one position per step
(generated_bias masks the positions not written yet), so a step reads the
cache in place and returns only what it adds: no step copies the cache.
Which row continues which (beam reordering, finished rows leaving) is the
caller's business too. The prompt's last layer runs only for the last
position: the first generated token needs nothing else, and every layer's
keys and values are computed before that cut.

Linear layers run on [tokens, hidden] matrices: a 2-D MatMul + Add is what
ONNX Runtime fuses into one Gemm with its bias (and its activation); on the
[B, L, hidden] form the bias is a separate pass over the activations.
"""
from __future__ import annotations

import os

import numpy as np

PROMPT_PROGRAM = "prompt"
STEP_PROGRAM = "step"


def unimo_parameters(config: dict):
    """A paddle.nn.Layer holding UNIMOLMHeadModel's parameters under paddlenlp's
    names (unimo.embeddings.*, unimo.encoder_norm, unimo.encoder.layers.N.*,
    lm_head.*; the LM head's decoder weight is the word embeddings), built
    from paddle.nn alone: importing paddlenlp and building its model would
    cost a cold export about 7 s, for layers that are these very paddle.nn
    classes. `config` is the checkpoint's config.json (vocab_size as kept)."""
    import types

    import paddle
    from paddle import nn

    hidden, vocab = int(config["hidden_size"]), int(config["vocab_size"])

    class Embeddings(nn.Layer):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(vocab, hidden)
            self.position_embeddings = nn.Embedding(int(config["max_position_embeddings"]), hidden)
            self.token_type_embeddings = nn.Embedding(int(config["type_vocab_size"]), hidden)

    class Unimo(nn.Layer):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder_norm = nn.LayerNorm(hidden)
            self.encoder = nn.Layer()
            self.encoder.layers = nn.LayerList([
                nn.TransformerEncoderLayer(hidden, int(config["num_attention_heads"]), int(config["intermediate_size"]),
                                           dropout=0.0, activation=config["hidden_act"], attn_dropout=0.0,
                                           act_dropout=0.0, normalize_before=bool(config.get("normalize_before")))
                for _ in range(int(config["num_hidden_layers"]))])

    class LMHead(nn.Layer):
        def __init__(self, embedding_weight):
            super().__init__()
            self.transform = nn.Linear(hidden, hidden)
            self.activation = getattr(nn.functional, config["hidden_act"])
            self.layer_norm = nn.LayerNorm(hidden)
            self.decoder_weight = embedding_weight
            self.decoder_bias = self.create_parameter(shape=[vocab], dtype=paddle.float32, is_bias=True)

    class UnimoLMHead(nn.Layer):
        def __init__(self):
            super().__init__()
            self.config = types.SimpleNamespace(**config)
            self.unimo = Unimo()
            self.lm_head = LMHead(self.unimo.embeddings.word_embeddings.weight)

    return UnimoLMHead()


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
            """[B, L] ids -> [B * L, hidden]."""
            e = self.model.unimo.embeddings
            x = e.word_embeddings(ids) + e.position_embeddings(positions) + e.token_type_embeddings(types)
            return paddle.reshape(self.model.unimo.encoder_norm(x), [-1, config.hidden_size])

        def split_heads(self, x, projection, rows):  # [rows * S, hidden] -> [rows, H, S, D]
            y = paddle.reshape(projection(x), [rows, -1, heads, head_dim])
            return paddle.transpose(y, [0, 2, 1, 3])

        def merge_heads(self, x):  # [B, H, S, D] -> [B * S, hidden]
            return paddle.reshape(paddle.transpose(x, [0, 2, 1, 3]), [-1, heads * head_dim])

        def finish_layer(self, layer, x, attended):
            """Out-projection, residual + norm1, FFN, residual + norm2."""
            x = layer.norm1(x + layer.self_attn.out_proj(self.merge_heads(attended)))
            return layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))

        def lm_head(self, h):
            head = self.model.lm_head
            h = head.layer_norm(head.activation(head.transform(h)))
            return paddle.matmul(h, head.decoder_weight, transpose_y=True) + head.decoder_bias

        def prompt(self, input_ids, token_type_ids, position_ids, attn_mask):
            rows = paddle.shape(input_ids)[0]
            x = self.embed(input_ids, token_type_ids, position_ids)
            keys_values = []
            last = len(self.layers) - 1
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                k, v = self.split_heads(x, attn.k_proj, rows), self.split_heads(x, attn.v_proj, rows)
                keys_values.append((k, v))
                if i == last:  # only the start token goes on
                    x = paddle.reshape(x, [rows, -1, config.hidden_size])[:, -1, :]
                    attn_mask = attn_mask[:, :, -1:, :]
                q = self.split_heads(x, attn.q_proj, rows)
                scores = paddle.matmul(q * head_dim ** -0.5, k, transpose_y=True) + attn_mask
                x = self.finish_layer(layer, x, paddle.matmul(F.softmax(scores), v))
            prompt_part = [t[:, :, :-1, :] for kv in keys_values for t in kv]
            start_part = [t[:, :, -1:, :] for kv in keys_values for t in kv]
            return [self.lm_head(x)] + prompt_part + start_part

        def step(self, input_ids, token_type_ids, position_ids, prompt_bias, generated_bias, prompt_cache,
                 generated_cache):
            x = self.embed(input_ids, token_type_ids, position_ids)  # [R, hidden]
            sources = paddle.shape(prompt_cache[0])[0]
            rows = paddle.shape(input_ids)[0]
            beams = rows // sources
            prompt_bias = paddle.unsqueeze(prompt_bias, [1, 2])        # [S, 1, 1, Lp]
            generated_bias = paddle.unsqueeze(generated_bias, [1, 2])  # [R, 1, 1, W]
            new_keys_values = []
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                k, v = self.split_heads(x, attn.k_proj, rows), self.split_heads(x, attn.v_proj, rows)  # [R, H, 1, D]
                new_keys_values += [k, v]
                q = self.split_heads(x, attn.q_proj, rows) * head_dim ** -0.5  # [R, H, 1, D]
                # A source's beams are query rows over its one prompt cache.
                q_by_source = paddle.transpose(paddle.reshape(q, [sources, beams, heads, head_dim]), [0, 2, 1, 3])
                prompt_scores = paddle.matmul(q_by_source, prompt_cache[2 * i], transpose_y=True) + prompt_bias
                prompt_len = paddle.shape(prompt_scores)[3]
                prompt_scores = paddle.reshape(paddle.transpose(prompt_scores, [0, 2, 1, 3]),
                                               [rows, heads, 1, prompt_len])
                generated_scores = paddle.matmul(q, generated_cache[2 * i], transpose_y=True) + generated_bias
                width = paddle.shape(generated_scores)[3]
                own_score = paddle.sum(q * k, axis=-1, keepdim=True)  # [R, H, 1, 1]
                weights = F.softmax(paddle.concat([prompt_scores, generated_scores, own_score], -1))
                prompt_weights = paddle.transpose(
                    paddle.reshape(weights[:, :, :, :prompt_len], [sources, beams, heads, prompt_len]), [0, 2, 1, 3])
                from_prompt = paddle.matmul(prompt_weights, prompt_cache[2 * i + 1])  # [S, H, beams, D]
                from_prompt = paddle.reshape(paddle.transpose(from_prompt, [0, 2, 1, 3]), [rows, heads, 1, head_dim])
                from_generated = paddle.matmul(weights[:, :, :, prompt_len:prompt_len + width], generated_cache[2 * i + 1])
                x = self.finish_layer(layer, x, from_prompt + from_generated + weights[:, :, :, -1:] * v)
            return [self.lm_head(x)] + new_keys_values

    return ThinUnimo()


class EagerProgram:
    """`prompt` or `step` of a thin layer run eagerly, behind the same
    `run_resident` / `arrays` contract as the engines: the reference that a
    converted program is checked against, without loading a predictor."""

    def __init__(self, thin, name: str):
        from predictor.engines.paddle_inference import PaddleArrays

        self.thin, self.name, self.arrays = thin, name, PaddleArrays()
        self.flat_inputs = 4 if name == PROMPT_PROGRAM else 5

    def run_resident(self, inputs: list) -> list:
        import paddle

        tensors = [paddle.to_tensor(x) if isinstance(x, np.ndarray) else x for x in inputs]
        with paddle.no_grad():
            if self.name == PROMPT_PROGRAM:
                return self.thin.prompt(*tensors)
            caches = tensors[self.flat_inputs:]
            half = len(caches) // 2
            return self.thin.step(*tensors[:self.flat_inputs], caches[:half], caches[half:])


def export_unimo_programs(model, model_dir: str):
    """Save `prompt` and `step` as two Paddle Inference programs under
    model_dir; returns the thin layer they were traced from."""
    import paddle
    from paddle.static import InputSpec

    from predictor.conversions.export_cache import save_static

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

        def forward(self, input_ids, token_type_ids, position_ids, prompt_bias, generated_bias, prompt_cache,
                    generated_cache):
            return self.thin.step(input_ids, token_type_ids, position_ids, prompt_bias, generated_bias,
                                  prompt_cache, generated_cache)

    save_static(Prompt(), token_specs + [InputSpec([None, 1, None, None], "float32", "attn_mask")],
                os.path.join(model_dir, PROMPT_PROGRAM))
    save_static(Step(), step_token_specs + [InputSpec([None, None], "float32", "prompt_bias"),
                                            InputSpec([None, None], "float32", "generated_bias"),
                                            cache_specs("prompt"), cache_specs("generated")],
                os.path.join(model_dir, STEP_PROGRAM))
    return thin
