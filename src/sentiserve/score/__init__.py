"""Batch scoring: ``sentiserve score`` over files, folders and S3 prefixes, resumable, in one
process (``run``) or on Ray Data (``ray_data``)."""

from sentiserve.score.inputs import InputSpec
from sentiserve.score.run import Progress, Summary, score

__all__ = ["InputSpec", "Progress", "Summary", "score"]
