"""Real NVIDIA Triton: its model repository forms, the bundled server, its python models."""
