"""The inference server: transports over one data plane, a batcher, an engine."""
