"""Fixtures for the storage tests: a real SeaweedFS S3 server per module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for _servers

from _servers import seaweedfs_server  # noqa: E402


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A loopback S3 endpoint (SeaweedFS), shared by the tests of one module."""
    with seaweedfs_server(tmp_path_factory.mktemp("s3")) as ep:
        yield ep
