"""Running things on this machine: ports and readiness (``ready``), and the scale-out
rehearsal behind a local load balancer (``cluster``, ``sentiserve cluster-local``)."""
