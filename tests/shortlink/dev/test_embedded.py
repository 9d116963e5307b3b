"""The embedded PostgreSQL's own start and stop (shortlink.dev.embedded)."""

from __future__ import annotations

from pathlib import Path

from shortlink.dev import embedded


def test_stop_postgres_stops_the_server_before_its_folder_goes(tmp_path: Path) -> None:
    """stop_postgres ends the server of a data folder at once (a benchmark removes the
    folder before it exits, which left the server running), and is a no-op after."""
    embedded.ensure_postgres(tmp_path)
    pid_file = tmp_path / "postgres" / "postmaster.pid"
    pid = int(pid_file.read_text().split()[0])
    embedded.stop_postgres(tmp_path)
    assert not pid_file.exists()
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    embedded.stop_postgres(tmp_path)  # already stopped: nothing to do


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
