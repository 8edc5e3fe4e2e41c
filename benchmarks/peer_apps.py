"""The trivial task of the peer comparison, written once for each peer.

Each peer's worker imports this module by name (``peer_apps.dramatiq_broker``,
``peer_apps:huey``, ...), so it reads the Valkey URL from the environment
(``BENCH_REDIS_URL``, set by :mod:`peers`) rather than from an argument.
Every peer stores what its task returns the way it stores any result:
``[a + b, time.time()]``, the sum (checked afterwards) and the moment it
finished (the drain is timed from these, as the wizard's is from its
``started_at``/``finished_at``).

A peer is imported only when its worker or its producer asks for it, so
this module costs nothing to the others.
"""

from __future__ import annotations

import os
import time

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PEER = os.environ.get("BENCH_PEER", "")


def add(a: int, b: int) -> list:
    """The task: ``[a + b, time.time()]`` (the sum, and when it finished)."""
    return [a + b, time.time()]


if PEER == "dramatiq":
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    dramatiq_backend = RedisBackend(url=URL)
    dramatiq_broker = RedisBroker(url=URL)
    dramatiq_broker.add_middleware(Results(backend=dramatiq_backend))
    dramatiq.set_broker(dramatiq_broker)
    dramatiq_add = dramatiq.actor(add, actor_name="add", store_results=True, max_retries=0)

if PEER == "huey":
    from huey import RedisHuey

    huey = RedisHuey("bench", url=URL, results=True)
    huey_add = huey.task(name="add")(add)

if PEER == "celery":
    from celery import Celery

    celery = Celery("bench", broker=URL, backend=URL)
    celery.conf.update(task_ignore_result=False, worker_hijack_root_logger=False)
    celery_add = celery.task(name="add")(add)
