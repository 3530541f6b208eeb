"""A user's fine-tuned checkpoint directory in PaddleNLP's format.

Only reads what is there (config.json, weights, vocab.txt) and says clearly
what is missing; building the network is the task modules' job.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

WEIGHT_FILES = ("model_state.pdparams", "model.safetensors")
# architectures (config.json) -> task kind
TASK_OF_ARCHITECTURE = {
    "ErnieForSequenceClassification": "classify",
    "UNIMOLMHeadModel": "generate",
}
TASK_OF_MODEL_TYPE = {"ernie": "classify", "unimo": "generate"}


# The folder, inside an export cache, of remembered weight digests.
WEIGHTS_DIGESTS = "weights_digests"


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    model_dir: str
    config: dict
    weights_path: str
    vocab_path: str

    @property
    def task(self) -> str:
        for arch in self.config.get("architectures") or []:
            if arch in TASK_OF_ARCHITECTURE:
                return TASK_OF_ARCHITECTURE[arch]
        model_type = self.config.get("model_type")
        if model_type in TASK_OF_MODEL_TYPE:
            return TASK_OF_MODEL_TYPE[model_type]
        raise CheckpointError(
            f"{self.model_dir}/config.json: cannot tell the task from architectures="
            f"{self.config.get('architectures')} model_type={model_type!r}; pass --task classify|generate"
        )

    def load_weights(self) -> dict[str, np.ndarray]:
        if self.weights_path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(self.weights_path)
        import paddle

        return paddle.load(self.weights_path, return_numpy=True)

    def build_model(self, model_class, config, weights: dict[str, np.ndarray]):
        """`model_class(config)` in eval mode holding `weights` (pruned or not).
        LazyGuard skips the random initialisation that the weights overwrite
        anyway (seconds for a 40k x 768 table)."""
        import paddle

        with paddle.LazyGuard():
            model = model_class(config)
        missing, _ = model.set_state_dict(weights)
        if missing:
            raise CheckpointError(f"{self.weights_path}: weights missing for {missing[:5]}")
        model.eval()
        return model

    def weights_digest(self, remembered_in: str | None = None) -> str:
        """Content hash of the weights: the export cache must not survive a
        re-trained checkpoint saved under the same name. Hashing 400 MB takes
        about 1.2 s, so with `remembered_in` (a folder) the hash is kept per
        (path, inode, size, modification time) and read back while the file
        is unchanged, as make and git's index trust a file's stat."""
        stat = os.stat(self.weights_path)
        seen = f"{os.path.realpath(self.weights_path)}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}"
        record = os.path.join(remembered_in, WEIGHTS_DIGESTS,
                              hashlib.blake2b(seen.encode(), digest_size=12).hexdigest()) if remembered_in else None
        if record and os.path.isfile(record):
            with open(record, encoding="utf-8") as f:
                return f.read().strip()
        digest = hashlib.blake2b(digest_size=16)
        with open(self.weights_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        if record:
            os.makedirs(os.path.dirname(record), exist_ok=True)
            staging = f"{record}.{os.getpid()}"
            with open(staging, "w", encoding="utf-8") as f:
                f.write(digest.hexdigest())
            os.replace(staging, record)
        return digest.hexdigest()


def read_checkpoint(model_dir: str) -> Checkpoint:
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: model directory not found")
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{model_dir}: no config.json (save the model with save_pretrained)")
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_path}: not valid JSON ({err})") from None
    weights = [os.path.join(model_dir, name) for name in WEIGHT_FILES if os.path.isfile(os.path.join(model_dir, name))]
    if not weights:
        raise CheckpointError(f"{model_dir}: no weights file; expected one of {', '.join(WEIGHT_FILES)}")
    vocab_path = os.path.join(model_dir, "vocab.txt")
    if not os.path.isfile(vocab_path):
        raise CheckpointError(f"{model_dir}: no vocab.txt (save the tokenizer with save_pretrained)")
    return Checkpoint(model_dir=model_dir, config=config, weights_path=weights[0], vocab_path=vocab_path)
