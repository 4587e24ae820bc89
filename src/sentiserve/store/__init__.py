"""Model repositories in S3 (or any S3-compatible store): publish, pull, and serve from."""
