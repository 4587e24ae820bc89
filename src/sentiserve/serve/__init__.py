"""The inference server: transports under one request policy, over one data plane
(embedded or a Triton gateway), a batcher and the engines."""
