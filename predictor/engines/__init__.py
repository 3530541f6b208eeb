"""The engine seam: EngineOptions (options.py, plain data), the choice of
engine and `open_engine` (choice.py), and one file per engine behind it
(onnx_runtime.py, paddle_inference.py). Every engine runs named numpy
inputs to outputs (`run`) and keeps a decoder's cache in its own memory
(`run_resident`). Imports nothing from the task rooms or conversions.
"""
