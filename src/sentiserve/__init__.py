"""sentiserve: BERT-family text classifiers from fine-tuning to a monitored inference service."""

__version__ = "0.1.0"
