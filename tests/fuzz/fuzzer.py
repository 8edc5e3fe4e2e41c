"""A bounded fuzz run of the public API, generated from wizard/openapi.json.

schemathesis turns each operation of the OpenAPI document into Hypothesis
strategies: *positive* requests that fit the document and *negative* ones
that break it on purpose (wrong types, missing fields, odd headers). Every
request goes to a real cluster through its gateway, and every answer is
checked for the two promises of the edge:

- no 5xx: bad input is the client's fault, so a 4xx, never a 500 (and a busy
  or full node answers 429/503 only where the document says so);
- every error is an RFC 9457 problem document (``application/problem+json``
  with ``type``, ``title``, ``status`` and ``detail``).

The run is bounded twice: ``examples`` per operation and mode, and a wall
clock ``seconds`` after which the remaining examples are skipped cheaply::

    >>> report = fuzz("http://127.0.0.1:8080", examples=20, seconds=90)  # doctest: +SKIP
    >>> report.server_errors, report.not_problems                        # doctest: +SKIP
    ([], [])
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from wizard.api import OPENAPI_PATH

#: Longest wait for one answer, seconds (the gateway's own limits are shorter).
REQUEST_TIMEOUT = 15.0


@dataclass
class FuzzReport:
    """What a fuzz run sent and got back."""

    #: Requests sent, answers by status code.
    statuses: Counter = field(default_factory=Counter)
    #: "METHOD path -> status" of every 5xx answer.
    server_errors: list[str] = field(default_factory=list)
    #: "METHOD path -> status content-type" of every error that is not problem+json.
    not_problems: list[str] = field(default_factory=list)
    #: Requests that got no answer in REQUEST_TIMEOUT (or a reset connection).
    no_answer: list[str] = field(default_factory=list)
    #: Operations in the document (each fuzzed in both modes).
    operations: int = 0
    #: "METHOD /template" of each operation that got at least one answer.
    answered: set[str] = field(default_factory=set)
    #: Wall-clock duration of the run, seconds.
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        """Requests that got an answer."""
        return sum(self.statuses.values())

    def record(self, case, response: schemathesis.Response) -> None:
        """Check one answer and count it."""
        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
        self.statuses[response.status_code] += 1
        self.answered.add(f"{case.method} {case.path}")
        if response.status_code >= 500:
            self.server_errors.append(f"{where}: {response.content[:200]!r}")
        if response.status_code >= 400 and not is_problem(response):
            self.not_problems.append(
                f"{where} {content_type(response)}: {response.content[:200]!r}"
            )


def content_type(response: schemathesis.Response) -> str:
    """The media type of ``response``, without parameters ("" if none)."""
    values = response.headers.get("content-type") or [""]
    return values[0].split(";")[0].strip()


def is_problem(response: schemathesis.Response) -> bool:
    """True if ``response`` is an RFC 9457 problem document."""
    if content_type(response) != "application/problem+json":
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        # Says problem+json but is not JSON at all.
        return False
    members = {"type", "title", "status", "detail"}
    return (
        isinstance(body, dict) and members <= body.keys() and body["status"] == response.status_code
    )


def fuzz(base_url: str, *, examples: int, seconds: float, admin_token: str = "") -> FuzzReport:
    """Fuzz every operation of the OpenAPI document against ``base_url``,
    ``examples`` positive and ``examples`` negative cases each, stopping
    after ``seconds``. With ``admin_token`` the admin routes are also called
    with the right bearer token half of the time. Returns the report; raises
    nothing for a bad answer (the caller asserts on the report)."""
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_PATH.read_text()))
    operations = [result.ok() for result in schema.get_all_operations()]
    runs = [(op, mode) for op in operations for mode in GenerationMode]
    report = FuzzReport(operations=len(operations))
    started = time.monotonic()
    session = requests.Session()
    try:
        for done, (operation, mode) in enumerate(runs):
            # Each run gets an equal share of the time left, so a slow
            # operation cannot starve the ones after it.
            share = (started + seconds - time.monotonic()) / (len(runs) - done)
            strategy = operation.as_strategy(generation_mode=mode)
            try:
                _run(
                    strategy,
                    examples,
                    time.monotonic() + share,
                    base_url,
                    session,
                    report,
                    admin_token,
                )
            except TimeUp:
                # This run's share of the time is spent: on to the next one.
                continue
    finally:
        session.close()
    report.seconds = time.monotonic() - started
    return report


class TimeUp(Exception):
    """Raised inside a Hypothesis run when the fuzz run's time is spent, to
    end it without generating the remaining examples."""


def _run(strategy, examples, deadline, base_url, session, report, admin_token) -> None:
    """Draw ``examples`` cases from ``strategy`` and send each one.

    Raises:
        TimeUp: ``deadline`` (time.monotonic) passed.
    """

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def send(case) -> None:
        if time.monotonic() > deadline:
            raise TimeUp
        headers = {}
        if admin_token and case.operation.definition.raw.get("security") and report.requests % 2:
            headers["Authorization"] = f"Bearer {admin_token}"
        try:
            response = case.call(
                base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT
            )
        except requests.RequestException as error:
            # No answer at all: a hang or a reset, worse than any status.
            report.no_answer.append(f"{case.method} {case.formatted_path}: {error}")
            return
        report.record(case, response)

    send()
