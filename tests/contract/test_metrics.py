"""GET /metrics, read the way Prometheus reads it.

The exposition is parsed with the official parser
(``prometheus_client.parser.text_string_to_metric_families``), then checked
for the naming conventions (https://prometheus.io/docs/practices/naming/)
and for numbers that move when real things happen: requests served, tasks
submitted and finished by a real worker step, tasks waiting in the queue.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.contract.conftest import Lab
from tests.support import call, wait_for
from wizard.api import make_app


@dataclass(frozen=True)
class Scrape:
    """One parsed scrape: the metric families, and every sample's value by
    (sample name, labels)."""

    families: list
    values: dict[tuple[str, frozenset], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name{labels}``; 0 when absent (a counter not yet
        incremented has no series)."""
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def family(self, name: str):
        """The family called ``name`` (counters without their ``_total``)."""
        [found] = [family for family in self.families if family.name == name]
        return found


def scrape(lab: Lab) -> Scrape:
    """GET /metrics on the lab's node and parse it. Every sample must name
    the node (``node="node-1"``); the values are keyed without that label."""
    response = lab.call("GET", "/metrics")
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = list(text_string_to_metric_families(response.body.decode()))
    values = {}
    for family in families:
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("node", None) == lab.settings.node_id, sample
            values[(sample.name, frozenset(labels.items()))] = sample.value
    return Scrape(families, values)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much the sample ``name{labels}`` grew between two scrapes."""
    return after.value(name, **labels) - before.value(name, **labels)


def test_metric_names_follow_the_prometheus_conventions(lab):
    lab.call("GET", "/whoami")
    lab.submit(1, 2)
    assert lab.work() == "complete"
    text = lab.call("GET", "/metrics").body.decode()
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    assert declared, "no # TYPE lines"
    for name, kind in declared.items():
        assert re.fullmatch(r"wizard_[a-z0-9_]+", name), name
        assert kind in ("counter", "gauge", "histogram"), (name, kind)
        assert name.endswith("_total") == (kind == "counter"), f"{name} is a {kind}"
        if kind == "histogram" or re.search(r"duration|age|latency", name):
            assert name.endswith("_seconds"), f"{name} measures time: use base units"
    for family in scrape(lab).families:
        assert family.documentation, f"{family.name} has no HELP"
        for sample in family.samples:
            allowed = {"node", "route", "method", "status", "operation", "outcome", "le"}
            assert set(sample.labels) <= allowed
            assert math.isfinite(sample.value) or sample.labels.get("le") == "+Inf"


def test_every_sample_names_the_node_that_answered(lab):
    lab.submit(1, 2)
    assert lab.work() == "complete"
    samples = [sample for family in scrape(lab).families for sample in family.samples]
    assert samples and all(s.labels["node"] == "node-1" for s in samples)


def test_the_request_counter_of_a_route_moves_with_each_request(lab):
    before = scrape(lab)
    for _ in range(3):
        lab.call("GET", "/whoami")
    lab.call("GET", "/add", query={"a": "1", "b": "x"})
    after = scrape(lab)
    counter = "wizard_http_requests_total"
    assert moved(before, after, counter, route="/whoami", method="GET", status="200") == 3
    assert moved(before, after, counter, route="/add", method="GET", status="400") == 1
    assert after.value(counter, route="/metrics", method="GET", status="200") >= 1


def test_the_latency_histogram_has_cumulative_buckets_that_add_up(lab):
    for _ in range(4):
        lab.call("GET", "/healthz")
    lab.call("GET", "/add", query={"a": "1", "b": "2"})
    lab.call("GET", "/add", query={"a": "1"})
    result = scrape(lab)
    histogram = result.family("wizard_http_request_duration_seconds")
    assert histogram.type == "histogram"
    requests = result.family("wizard_http_requests")
    for route, expected in (("/healthz", 4), ("/add", 2)):
        buckets = sorted(
            (float(s.labels["le"]), s.value)
            for s in histogram.samples
            if s.name.endswith("_bucket") and s.labels["route"] == route
        )
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{route} buckets are not cumulative"
        assert buckets[-1][0] == math.inf
        count = result.value("wizard_http_request_duration_seconds_count", route=route)
        total = result.value("wizard_http_request_duration_seconds_sum", route=route)
        served = sum(s.value for s in requests.samples if s.labels["route"] == route)
        assert counts[-1] == count == served == expected
        assert 0 < total < count * 5.0


def test_task_counters_move_when_a_task_is_submitted_and_a_worker_finishes_it(lab):
    before = scrape(lab)
    lab.submit(2, 3, "multiply")
    submitted = scrape(lab)
    assert lab.work() == "complete"
    finished = scrape(lab)
    done = "wizard_tasks_finished_total"
    complete = {"operation": "multiply", "outcome": "complete"}
    assert moved(before, submitted, "wizard_tasks_submitted_total", operation="multiply") == 1
    assert moved(before, submitted, done, **complete) == 0
    assert moved(submitted, finished, done, **complete) == 1
    timed = "wizard_task_duration_seconds_count"
    assert moved(before, finished, timed, operation="multiply") == 1
    every = finished.value("wizard_task_duration_seconds_bucket", operation="multiply", le="+Inf")
    assert every == finished.value(timed, operation="multiply")


def test_a_division_by_zero_counts_as_a_failed_task(lab):
    before = scrape(lab)
    lab.submit(1, 0, "divide")
    assert lab.work() == "failed"
    after = scrape(lab)
    name = "wizard_tasks_finished_total"
    assert moved(before, after, name, operation="divide", outcome="failed") == 1
    assert moved(before, after, name, operation="divide", outcome="complete") == 0


def test_the_queue_gauges_show_tasks_waiting_without_workers(lab):
    for n in range(3):
        lab.submit(n, 1)

    def aged() -> Scrape | None:
        result = scrape(lab)
        return result if result.value("wizard_queue_oldest_pending_age_seconds") > 0 else None

    result = wait_for(aged, timeout=5, what="the oldest pending task to have an age")
    assert result.value("wizard_queue_pending_tasks") == 3
    assert result.value("wizard_tasks_in_flight") == 0
    assert result.value("wizard_workers_alive") == 0
    assert lab.work() == "complete"
    assert scrape(lab).value("wizard_queue_pending_tasks") == 2


def test_a_dead_letter_shows_in_its_gauge_and_counter(lab):
    lab.beat("node-1/w1")
    lab.dead_letter()
    result = scrape(lab)
    assert result.value("wizard_dead_letter_tasks") == 1
    assert result.value("wizard_tasks_dead_lettered_total") == 1
    assert result.value("wizard_workers_alive") == 1


def test_made_up_methods_add_no_series(settings):
    app = make_app(settings)
    try:
        for method, path in [("GET", "/metrics"), ("FOO", "/healthz"), ("FOO", "/made/up")]:
            call(app, method, path)
        before = _series(call(app, "GET", "/metrics").body.decode())
        for n in range(150):
            call(app, f"M{n}X", "/healthz" if n % 2 else f"/made/up/{n}")
        after = _series(call(app, "GET", "/metrics").body.decode())
    finally:
        app.client.close()

    assert after == before
    assert 'method="other"' in "\n".join(after)
    assert not any("M1X" in line for line in after)


def _series(text: str) -> set[str]:
    """The names and labels of the HTTP request series, without values."""
    return {
        line.rsplit(" ", 1)[0]
        for line in text.splitlines()
        if line.startswith("wizard_http_requests_total{")
    }
