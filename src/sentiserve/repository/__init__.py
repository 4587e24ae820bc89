"""The on-disk model repository in Triton's layout: versions, manifests with checksums,
generated ``config.pbtxt`` forms, and the stores (local, S3) it lives in."""
