"""ONNX / TensorRT export (to be built on float_rt; see the export issue)."""
