"""Text generation (UNIMO-text): the task kind (task.py), the export of the
prompt and step programs (export.py, unimo_programs.py, probe.py), their
ONNX conversion (onnx_decoder.py), the cache-keeping step engine
(cached_decoder.py), the decoding loop (decoding.py) and the runner
(runner.py).
"""
