"""Optimized engine variants (ONNX Runtime fusion, static and dynamic int8, fp16, TensorRT),
each checked for accuracy, agreement with fp32, batch invariance and speed."""
