"""``sentiserve bench``: a protocol-aware load generator for sentiserve and Triton.

texts.py (what to send) -> protocols.py (how to send one) -> loadgen.py (closed and open
loops) + servermetrics.py (the server's own view) -> report.py (tables, JSON, CSV, plot).
It talks to servers over the network only: nothing here imports ``sentiserve.serve``.
"""
