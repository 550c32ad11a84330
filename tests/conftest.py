"""Fixtures shared by the test files that train in-process."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="module")
def restore_process_state():
    """In-process training changes process-wide state (torch threads, deterministic mode,
    PL_* environment variables); put it back for the test files that run after this one.
    A file that trains in-process uses it for all its tests:
    ``pytestmark = pytest.mark.usefixtures("restore_process_state")``."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    env = dict(os.environ)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    os.environ.clear()
    os.environ.update(env)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster and steadier on a shared 2-core machine.
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` in a file of such tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
