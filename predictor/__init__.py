"""Token ids -> outputs: everything between the tokenised input and the merge.

Rooms, by concern:
- engines/: the engine seam (options.py, choice.py) and one file per engine
  (onnx_runtime.py, paddle_inference.py); nothing outside it knows which runs.
- conversions/: export steps between program formats, each cached under its
  own key (export_cache.py): Paddle program -> ONNX (onnx_model.py), int8
  weights (int8_weights.py, first_token.py), paddle.tensorrt (tensorrt.py).
- classify/, generate/: one room per task kind: its TaskKind (task.py), its
  export and runner, and its own pieces (classification's INT8 guard and
  low-margin re-run; generation's decoding loop, cache and decoder conversion).
- Shared by every task kind, here: checkpoint.py (reading a checkpoint),
  pruning.py (the vocabulary kept), batching.py (length-sorted batches),
  workers.py (predictor processes), task_kind.py and tasks.py (the task-kind
  contract and the kinds there are).

Engines and conversions import no task room; a task room imports engines,
conversions and the shared modules, never another task room.
"""
