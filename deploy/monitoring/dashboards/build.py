"""Writes sentiserve.json, the Grafana dashboard, from the panel list below.

Run after editing: python deploy/monitoring/dashboards/build.py (a test checks the JSON is
up to date, valid, and queries only metrics the server exports or the rules record).
"""

from __future__ import annotations

import json
from pathlib import Path

PANELS = [
    # (title, unit, [(expr, legend)])
    (
        "Throughput (requests/s)",
        "reqps",
        [
            ("sentiserve:requests:rate1m", "{{model}}"),
        ],
    ),
    (
        "Latency percentiles",
        "s",
        [
            ("sentiserve:request_duration_seconds:p50_5m", "p50 {{model}}"),
            ("sentiserve:request_duration_seconds:p95_5m", "p95 {{model}}"),
            ("sentiserve:request_duration_seconds:p99_5m", "p99 {{model}}"),
        ],
    ),
    (
        "Queue vs compute time per request",
        "µs",
        [
            ("sentiserve:queue_us_per_request:rate1m", "queue {{instance}}"),
            ("sentiserve:compute_us_per_request:rate1m", "compute {{instance}}"),
        ],
    ),
    (
        "Average batch size (texts per engine call)",
        "short",
        [
            ("sentiserve:batch_size:avg1m", "{{instance}}"),
        ],
    ),
    (
        "Errors by reason (requests/s)",
        "reqps",
        [
            ("sentiserve:request_failures_by_reason:rate5m", "{{model}} {{reason}}"),
            ("sum(rate(sentiserve_overload_rejected_total[5m]))", "refused at the door"),
        ],
    ),
    (
        "Error ratio",
        "percentunit",
        [
            ("sentiserve:error_ratio:rate5m", "{{model}}"),
        ],
    ),
    (
        "Replicas up",
        "short",
        [
            ('sum by (job) (up{job=~"sentiserve.*|triton.*"})', "{{job}}"),
        ],
    ),
    (
        "Queued or running texts",
        "short",
        [
            ("sum by (model) (nv_inference_pending_request_count)", "{{model}}"),
        ],
    ),
    (
        "GPU utilisation (Triton on GPU nodes)",
        "percentunit",
        [
            ("sentiserve:gpu_utilization:avg", "{{instance}}"),
            ("sentiserve:gpu_memory_used:ratio", "memory {{instance}}"),
        ],
    ),
    (
        "Prediction drift: label share over 1 h vs reference",
        "percentunit",
        [
            ("sentiserve:label_share:rate1h", "{{model}} {{label}}"),
            ("sentiserve:reference_label_share", "reference {{model}} {{label}}"),
        ],
    ),
    (
        "Prediction drift: median input tokens over 1 h vs reference",
        "short",
        [
            ("sentiserve:input_tokens:p50_1h", "{{model}}"),
            ("sentiserve:reference_input_tokens:p50", "reference {{model}}"),
            ("sentiserve:truncated_ratio:rate1h * 100", "% cut {{model}}"),
        ],
    ),
    (
        "Prediction scores (share of texts by top score)",
        "percentunit",
        [
            (
                "sum by (model, le) (rate(sentiserve_prediction_score_bucket[1h]))"
                " / ignoring (le) group_left"
                " clamp_min(sum by (model) (rate(sentiserve_prediction_score_count[1h])), 1e-9)",
                "{{model}} score <= {{le}}",
            ),
        ],
    ),
    (
        "Resident memory",
        "bytes",
        [
            ('process_resident_memory_bytes{job=~"sentiserve.*"}', "{{instance}}"),
        ],
    ),
]


def dashboard() -> dict[str, object]:
    panels = []
    for index, (title, unit, targets) in enumerate(PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + k), "expr": expr, "legendFormat": legend}
                    for k, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "title": "sentiserve",
        "uid": "sentiserve",
        "schemaVersion": 39,
        "version": 1,
        "tags": ["sentiserve", "triton", "inference"],
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


COPIES = (
    Path(__file__).with_name("sentiserve.json"),
    Path(__file__).parents[2] / "helm" / "sentiserve" / "files" / "sentiserve.json",
)
"""The dashboard, and the Helm chart's copy of it (charts can only read their own files)."""

if __name__ == "__main__":
    for out in COPIES:
        out.write_text(render())
        print(f"wrote {out}")
