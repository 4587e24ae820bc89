"""Metrics: Triton's names exactly (no ``_total``), what one batch adds, and an exposition
that prometheus_client's own parser reads back."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentiserve.serve.batcher import BatchStats
from sentiserve.serve.metrics import Metrics, TritonMetric


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    # The parser calls a counter's samples <name>_total; Triton's names have no suffix.
    return {
        (family.name if family.type == "counter" else s.name, tuple(sorted(s.labels.items()))): (
            s.value
        )
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def text_of(metrics: Metrics) -> str:
    return metrics.exposition().decode()


def test_a_batch_is_charged_as_triton_charges_it() -> None:
    metrics = Metrics()
    stats = BatchStats(
        size=4,
        padded_tokens=40,
        real_tokens=37,
        queue_seconds=[0.001] * 4,
        input_seconds=0.0005,
        infer_seconds=0.002,
        output_seconds=0.0001,
    )
    metrics.record_batch("sentiment", 3, stats)
    got = samples(metrics)
    key = (("model", "sentiment"), ("version", "3"))
    assert got[("nv_inference_exec_count", key)] == 1
    assert got[("nv_inference_queue_duration_us", key)] == pytest.approx(4000)
    # Every text in the batch is charged the whole batch's compute time, as in Triton.
    assert got[("nv_inference_compute_infer_duration_us", key)] == pytest.approx(4 * 2000)
    assert got[("sentiserve_batch_size_sum", key)] == 4
    assert got[("sentiserve_batch_tokens_sum", key)] == 40
    text = text_of(metrics)
    assert re.search(r"^nv_inference_exec_count\{", text, re.M), "Triton's name, as it is"
    assert not re.search(r"^nv_\w+_total", text, re.M), "no _total on Triton's counters"


def test_counters_only_go_up_and_gauges_both_ways() -> None:
    counter = TritonMetric("x", "doc")
    counter.inc(("m", "1"), 2)
    with pytest.raises(ValueError, match="only go up"):
        counter.inc(("m", "1"), -1)
    gauge = TritonMetric("y", "doc", kind="gauge")
    gauge.inc(("m", "1"), 3)
    gauge.dec(("m", "1"), 1)
    assert gauge.value(("m", "1")) == 2
    assert counter.total(("m",)) == 2


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.request_success.inc(('we"ird\\name\nx', "1"))
    got = samples(metrics)
    assert (
        got[("nv_inference_request_success", (("model", 'we"ird\\name\nx'), ("version", "1")))] == 1
    )


def test_only_a_gateway_exports_backend_readiness() -> None:
    # An embedded server has no Triton behind it: a sentiserve_backend_ready of 0 there would
    # fire SentiserveBackendDown for every embedded deployment.
    embedded = Metrics()
    assert b"sentiserve_backend_ready" not in embedded.exposition()
    gateway = Metrics()
    gateway.backend_ready().set(1)
    assert gateway.backend_ready() is gateway.backend_ready()
    assert b"\nsentiserve_backend_ready 1.0\n" in gateway.exposition()


def test_a_reference_is_exported_and_replaced_by_the_next_versions() -> None:
    metrics = Metrics()
    first = {"label_shares": {"negative": 0.4, "positive": 0.6}, "input_tokens": {"p50": 21.0}}
    metrics.set_reference("sentiment", 1, first)
    got = samples(metrics)
    share = "sentiserve_reference_label_share"
    assert got[(share, (("label", "positive"), ("model", "sentiment"), ("version", "1")))] == 0.6
    tokens = "sentiserve_reference_input_tokens"
    assert got[(tokens, (("model", "sentiment"), ("quantile", "0.5"), ("version", "1")))] == 21
    metrics.set_reference("sentiment", 2, {"label_shares": {"negative": 0.5, "positive": 0.5}})
    names = [
        (n, dict(labels)) for (n, labels) in samples(metrics) if n.startswith("sentiserve_ref")
    ]
    assert {(n, d["version"]) for n, d in names} == {(share, "2")}, "version 1's series must go"
    metrics.set_reference("sentiment", 2, {}, lengths=False)
    assert not [n for (n, _) in samples(metrics) if n.startswith("sentiserve_ref")]
