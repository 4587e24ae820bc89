"""Fine-tuning a BERT-family base model into a classifier (Hugging Face Trainer)."""
