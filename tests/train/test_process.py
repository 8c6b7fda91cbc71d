"""The process a run gets: its threads follow the CPUs it may use (available_cpus, and the sweep's share per job)."""

import os

from mgcnn.train.process import available_cpus


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    from mgcnn.sweep.runner import jobs_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert available_cpus() == 1
    assert jobs_threads(2, cpus=2) == 1 and jobs_threads(2, cpus=8) == 4 and jobs_threads(3, cpus=2) == 1
