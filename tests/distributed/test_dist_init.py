"""init_ray only joins a `ray start` cluster whose GCS actually answers (a stale file must not hang)."""

from __future__ import annotations

import socket

from raybb.distributed.driver import _live_local_cluster


def test_stale_or_missing_cluster_file_is_not_live(tmp_path):
    assert not _live_local_cluster(str(tmp_path / "missing"))
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stale = tmp_path / "ray_current_cluster"
    stale.write_text(f"127.0.0.1:{port}")
    assert not _live_local_cluster(str(stale))
    stale.write_text("garbage")
    assert not _live_local_cluster(str(stale))


def test_listening_address_is_live(tmp_path):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        f = tmp_path / "ray_current_cluster"
        f.write_text(f"127.0.0.1:{srv.getsockname()[1]}\n")
        assert _live_local_cluster(str(f))
