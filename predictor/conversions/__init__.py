"""Export steps: one program format into another, each cached on disk under
a key of everything it depends on (export_cache.py). Paddle program ->
ONNX with ONNX Runtime's fusions, checked against the program
(onnx_model.py); int8 weights in an ONNX graph and the census of what a
graph runs in int8 (int8_weights.py), with the first token's rows kept
apart (first_token.py); paddle.tensorrt (tensorrt.py). Task rooms call these;
these import engines only to load what they check.
"""
