"""`make run`'s dashboard secret: made once per data folder, kept, readable by its owner only."""

from __future__ import annotations

from pathlib import Path

from shortlink.dev.stack import dashboard_secret


def test_secret_is_made_once_per_data_folder(tmp_path: Path) -> None:
    """The first call writes a long random secret (mode 600); later calls read the same one."""
    first = dashboard_secret(tmp_path / "data")
    assert len(first) >= 32
    assert (tmp_path / "data" / "dashboard-secret").stat().st_mode & 0o777 == 0o600
    assert dashboard_secret(tmp_path / "data") == first
    assert dashboard_secret(tmp_path / "other") != first
