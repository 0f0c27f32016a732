"""rag-flamingo: retrieval-augmented few-shot in-context learning for Audio Flamingo."""

__version__ = "0.1.0"
