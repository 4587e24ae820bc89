"""ONNX export of a fine-tuned checkpoint, with a parity check against PyTorch."""
