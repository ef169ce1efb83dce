"""ONNX graphs, TensorRT engines and per-stage backends (torch, onnxruntime, tensorrt)."""
