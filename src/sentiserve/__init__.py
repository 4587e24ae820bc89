"""sentiserve: BERT-family text classifiers from fine-tuning to a monitored inference service."""

__version__ = "0.1.0"

DEFAULT_MODEL = "sentiment"
"""The model name the pipeline writes and every command and client asks for by default."""
