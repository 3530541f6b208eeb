"""Hugging Face transformers' `generate()` driving the PyTorch UNIMO-text of
scripts/gpu_torch_unimo.py: the GPU benchmark's stand-in for PaddleNLP's
`generate()`, which cannot run on a GPU that Paddle's published GPU build
has no kernels for.

What a user without a working Paddle GPU build would write first: the
checkpoint's weights in a PyTorch model, batches of the standard method's
size in input order, left-padded, handed to `model.generate()` (greedy, its
DynamicCache growing by concatenation every step, its logits processors
banning eos until the minimum length and unk/pad/bos always, its stopping
checks). The arithmetic is the port's, the same layers and weights; only
the decoding loop is transformers' rather than the port's preallocated one.

The model keeps the prompt's framing (gen_encode's: positions restart at 0 on
the start token, the source never sees the start token) in three extra
generate() arguments, prompt_types, prompt_positions and prompt_mask, which
stay the same every step; the step's token type is the start token's (1)
and its position the count of tokens generated before it, as PaddleNLP's
UNIMO generate() feeds them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from scripts.gpu_torch_unimo import GENERATED_TOKEN_TYPE, UnimoLM


class UnimoPortConfig(PretrainedConfig):
    model_type = "unimo-text-port"


# Later transformers 5 releases renamed the cache argument and output field past_key_values -> cache.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class UnimoForGenerate(PreTrainedModel, GenerationMixin):
    """An already-built UnimoLM (its weights loaded) behind transformers'
    generation API."""

    config_class = UnimoPortConfig
    main_input_name = "input_ids"

    def __init__(self, config: UnimoPortConfig, lm: UnimoLM | None = None):
        super().__init__(config)
        self.lm = lm

    @classmethod
    def around(cls, lm: UnimoLM, special) -> "UnimoForGenerate":
        vocab, hidden = lm.word.weight.shape
        # The sizes let transformers lay out its cache; the ids are generate()'s defaults.
        config = UnimoPortConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=len(lm.layers),
                                 num_attention_heads=lm.heads, eos_token_id=special.eos, pad_token_id=special.pad,
                                 bos_token_id=special.bos, is_decoder=True, use_cache=True)
        return cls(config, lm).eval()

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, cache=None, attention_mask=None,
                                      prompt_types=None, prompt_positions=None, prompt_mask=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        # After the prompt pass only the newest token is fed; the cache holds the rest.
        if cache.get_seq_length() > 0:
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, CACHE_FIELD: cache, "attention_mask": attention_mask,
                "prompt_types": prompt_types, "prompt_positions": prompt_positions, "prompt_mask": prompt_mask}

    def forward(self, input_ids, cache=None, past_key_values=None, attention_mask=None, prompt_types=None,
                prompt_positions=None, prompt_mask=None, **kwargs):
        lm = self.lm
        cache = cache if cache is not None else past_key_values
        seen = cache.get_seq_length()
        if seen == 0:  # the prompt pass: the framing given
            types, positions, mask = prompt_types, prompt_positions, prompt_mask
        else:  # one token a row: it sees every key its row may see, itself included
            # The start token sits at position 0, the k-th generated token at k (fed at cache position S + k - 1).
            types = torch.full_like(input_ids, GENERATED_TOKEN_TYPE)
            positions = torch.full_like(input_ids, seen - prompt_mask.shape[-1] + 1)
            mask = attention_mask.bool()[:, None, None, :]
        x = lm.embed_norm(lm.word(input_ids) + lm.position(positions) + lm.token_type(types))
        for i, layer in enumerate(lm.layers):
            q, k, v = (lm.split_heads(part) for part in layer.qkv(x).split(x.shape[-1], dim=-1))
            k, v = cache.update(k, v, i)
            x = lm.finish_layer(layer, x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        # Only the last position's logits are used (transformers' own models keep just that one too).
        return CausalLMOutputWithPast(logits=lm.logits(x[:, -1])[:, None], **{CACHE_FIELD: cache})


def generate_batch(model: UnimoForGenerate, framed: dict, special, max_new_tokens: int,
                   min_new_tokens: int) -> torch.Tensor:
    """Greedy ids [B, max_new_tokens] of one batch framed as
    gpu_torch_generation.Prompts.framed gives it (tensors on the model's
    device); rows that end early are padded with pad after eos, as
    transformers does."""
    start_row_sees = framed["mask"][:, 0, -1].long()  # the start token's keys: the source and itself
    out = model.generate(input_ids=framed["ids"], attention_mask=start_row_sees, prompt_types=framed["types"],
                         prompt_positions=framed["positions"], prompt_mask=framed["mask"],
                         max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False,
                         num_beams=1, use_cache=True, cache_implementation="dynamic", eos_token_id=special.eos,
                         pad_token_id=special.pad,
                         suppress_tokens=[special.unk, special.pad, special.bos])
    return out[:, framed["ids"].shape[1]:]
