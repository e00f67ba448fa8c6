r"""Runs independent tasks (one objective each) in single-threaded worker processes.

``run_tasks(worker, tasks, shared, jobs)`` calls ``worker(payload, emit)`` for every task, with
``shared`` (the data) available as :func:`shared`, and returns the results in task order. With
``jobs > 1`` the tasks run in a pool of ``min(jobs, len(tasks))`` processes, each with one torch
thread, the most expensive first (longest-processing-time order); with ``jobs == 1`` they run
in this process, also single-threaded. Every task seeds its own random state, so the results do
not depend on ``jobs``. Workers are forked on Linux when the tensors live on the CPU (no
re-import), spawned otherwise. Workers report progress through ``emit(event)``; the events reach
``on_event(index, event)`` in this process.
"""

import multiprocessing
import queue as queue_module
import sys
from dataclasses import dataclass

import torch

from .training import num_threads

__all__ = ["Task", "run_tasks", "shared"]

_STATE = {"shared": None, "queue": None}


@dataclass
class Task:
    r"""One unit of work: ``payload`` for the worker, ``cost`` for the scheduling order."""

    payload: object
    cost: float = 1.0


def shared():
    r"""The ``shared`` object of the current :func:`run_tasks` call (in workers too)."""
    return _STATE["shared"]


def _context(use_fork):
    if use_fork and sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _warm_up():
    r"""Imports in this process what every task would otherwise import lazily, so that forked
    workers inherit it: the first ``torch.optim`` optimiser imports ``torch._dynamo`` (about
    1.3 CPU seconds, once per process instead of once per worker)."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _init_worker(events, data):
    torch.set_num_threads(1)
    _STATE["queue"], _STATE["shared"] = events, data


def _call(worker, index, payload):
    events = _STATE["queue"]

    def emit(event):
        events.put((index, event))

    return worker(payload, emit)


def run_tasks(worker, tasks, shared_data, jobs, on_event=None, on_result=None, use_fork=True):
    r"""``[worker(task.payload, emit) for task in tasks]``, in parallel with ``jobs > 1``.

    :param worker: a module-level function ``worker(payload, emit)`` (picklable).
    :param tasks: :class:`Task` s.
    :param shared_data: data every worker reads through :func:`shared` (sent once per worker).
    :param int jobs: the most worker processes.
    :param on_event: ``on_event(index, event)`` for each event a task emits.
    :param on_result: ``on_result(index, result)`` as each task finishes.
    :param bool use_fork: fork the workers where possible (CPU tensors).
    """
    on_event = on_event or (lambda index, event: None)
    on_result = on_result or (lambda index, result: None)
    results = [None] * len(tasks)
    if jobs <= 1 or len(tasks) <= 1:
        previous = _STATE["shared"]
        _STATE["shared"] = shared_data
        try:
            with num_threads(1):
                for i, task in enumerate(tasks):

                    def emit(event, i=i):
                        on_event(i, event)

                    results[i] = worker(task.payload, emit)
                    on_result(i, results[i])
        finally:
            _STATE["shared"] = previous
        return results
    ctx = _context(use_fork)
    if ctx.get_start_method() == "fork":
        _warm_up()
    events = ctx.Queue()
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)
    processes = min(jobs, len(tasks))
    with ctx.Pool(processes, initializer=_init_worker, initargs=(events, shared_data)) as pool:
        pending = {i: pool.apply_async(_call, (worker, i, tasks[i].payload)) for i in order}

        def drain(timeout):
            try:
                index, event = events.get(timeout=timeout)
            except queue_module.Empty:
                return False
            on_event(index, event)
            return True

        while pending:
            drain(0.1)
            for i in [i for i, r in pending.items() if r.ready()]:
                while drain(0.01):  # this task's last progress events first
                    pass
                results[i] = pending.pop(i).get()
                on_result(i, results[i])
    return results
