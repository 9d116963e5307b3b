"""loadtests.machine: finding the processes a benchmark measures."""

from __future__ import annotations

import os
from pathlib import Path

from loadtests.machine import children, local_postmaster, postmaster_of


def test_the_postmaster_of_a_server_on_this_machine_is_found(database_url: str) -> None:
    """A DATABASE_URL server that runs here has its postmaster found, with its processes
    as children; a process that is no backend (this one) has no postmaster."""
    postmaster = local_postmaster(database_url)
    assert postmaster is not None
    assert Path(f"/proc/{postmaster}/comm").read_text().startswith("postgres")
    assert len(children(postmaster)) > 1  # its checkpointer, writers, backends
    assert postmaster_of(os.getpid()) is None
