"""Distributed Math Wizard: a producer-consumer system to run, watch, break and fix.

An nginx gateway balances round robin over nodes; each node's API
(producer) stores a task in Valkey and pushes its id; worker processes
(consumers) take ids off the queue, compute, and write the result. Valkey is
the only shared state, so any node can answer for any task.

Modules, in import order (each imports only those above it; the README's
layout section says what each holds)::

    config → logs → store → operations → membership → queue → loop → metrics
    → worker → scheduler → ratelimit → router → views → api → server
    → supervisor → processes → cluster → __main__
"""

__version__ = "0.1.0"
