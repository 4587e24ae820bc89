"""Inference engines (ONNX Runtime, PyTorch, TensorRT) and the tokenizer: token ids in,
logits out, with no knowledge of servers or protocols."""
