"""``sentiserve build``: every stage from data to the model repository (``build``)."""

from sentiserve.pipeline.build import (
    PENDING_FILE,
    STAGES,
    BuildConfig,
    BuildReport,
    Stage,
    build,
    fingerprint,
)

__all__ = ["PENDING_FILE", "STAGES", "BuildConfig", "BuildReport", "Stage", "build", "fingerprint"]
