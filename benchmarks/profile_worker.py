"""Where a worker's time goes: one worker draining a prefilled queue, under
pyinstrument (a statistical profiler, in the bench extra).

It starts its own Valkey (the project's valkey-server and valkey.conf) on a
free port, fills the queue with trivial tasks, then calls
:meth:`wizard.worker.Worker.step` in this process until every task is
recorded, the profiler sampling every half millisecond. Once with
``WIZARD_BATCH=1`` and once with ``WIZARD_BATCH=32``. It prints where the
time went, by function (its own time, wall clock: waiting on a socket
counts; functions under 1 % left out) and, unless ``--print-only``,
writes it to the profile section of ``benchmarks/README.md``::

    .venv/bin/python benchmarks/profile_worker.py
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from pyinstrument import Profiler

from wizard import queue, store
from wizard.cluster import EmbeddedValkey, free_port
from wizard.config import Settings
from wizard.worker import Worker

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
TASKS = 3000


def profile(url: str, batch: int) -> tuple[float, str]:
    """Drain TASKS tasks with one in-process worker; returns tasks per
    second and pyinstrument's text report."""
    settings = Settings(valkey_url=url, node_id="profile", work_seconds=0, batch=batch)
    client = store.connect(settings)
    client.flushdb()
    for _ in range(TASKS):
        queue.submit(client, "add", 1, 2, accepted_by="profile")
    worker = Worker(settings, "profile/w1")
    worker.beat()  # learns Valkey's clock, as before its first task
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    profiler.start()
    while worker.tasks_done < TASKS:
        worker.step()
    profiler.stop()
    seconds = time.perf_counter() - started
    client.close()
    worker.client.close()
    report = profiler.output_text(
        unicode=False, color=False, show_all=True, time="percent_of_total", flat=True
    )
    kept = [line for line in report.splitlines() if (_share(line) or 0) >= 1.0]
    return TASKS / seconds, "\n".join(kept)


def _share(line: str) -> float | None:
    """The percentage of a flat report's line (None for other lines)."""
    found = re.match(r"^\s*(\d+(?:\.\d+)?)%", line)
    return None if found is None else float(found.group(1))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print-only", action="store_true", help="do not write README.md")
    args = parser.parse_args(argv)
    sections = []
    with tempfile.TemporaryDirectory(prefix="wizard-profile-") as tmp:
        server = EmbeddedValkey(free_port(), Path(tmp))
        server.start()
        try:
            for batch in (1, 32):
                rate, report = profile(server.url, batch)
                sections.append(
                    f"WIZARD_BATCH={batch}: {rate:,.0f} tasks/s in-process, profiler on\n{report}"
                )
        finally:
            server.stop()
    text = "\n\n".join(sections)
    print(text)
    if not args.print_only:
        start, end = "<!-- profile:start -->", "<!-- profile:end -->"
        body = README.read_text()
        section = f"{start}\n```\n{text}\n```\n{end}"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
        README.write_text(pattern.sub(lambda _: section, body))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
