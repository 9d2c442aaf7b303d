"""URL -> fsspec filesystem, key joining, and retries with backoff.

Every storage call in raybb goes through :func:`resolve` and :func:`retry`, so local folders,
``file://``, ``memory://`` and ``s3://`` behave the same way to the driver and the actors.

Credentials: for ``s3://`` nothing is required here. s3fs/botocore read the standard AWS chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_PROFILE``/``~/.aws``/instance profile) and
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible servers. Explicit
``storage_options`` (``key``, ``secret``, ``client_kwargs={"endpoint_url": ...}``, ...) are passed to
fsspec as given. raybb never logs, prints or stores them: :class:`Location` hides them from its repr,
and the manifest holds only keys relative to the source/destination URL.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fsspec

from raybb.errors import StorageError

__all__ = ["Location", "resolve", "retry", "join_key", "NON_RETRYABLE", "is_transient"]

T = TypeVar("T")

#: Errors that no amount of retrying fixes (the object is not there, we may not touch it, the name
#: is invalid...). Kept for callers that test for them; :func:`is_transient` is what decides.
NON_RETRYABLE: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
    ValueError,
    TypeError,
    KeyError,
    NotImplementedError,
)

#: errno values of a transport that may recover: resets, refusals, timeouts, and the codes s3fs gives
#: HTTP 500 (EREMOTEIO) and 503 SlowDown (EBUSY).
_TRANSIENT_ERRNO = {
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE, errno.EAGAIN,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET, errno.EBUSY, errno.EREMOTEIO,
}  # fmt: skip
#: Transport error classes of botocore/aiohttp/urllib3, matched by name so that none must be imported.
_TRANSIENT_NAMES = {
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "IncompleteReadError", "ResponseStreamingError", "HTTPClientError", "ProxyConnectionError",
    "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError", "ServerTimeoutError",
    "ProtocolError", "FSTimeoutError",
}  # fmt: skip
#: S3 error codes that mean "try again later".
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException",
}  # fmt: skip


def is_transient(e: BaseException) -> bool:
    """Whether retrying ``e`` may help: connection resets, timeouts, HTTP 5xx and throttling.

    Permission, not-found, bad-name (``ENAMETOOLONG``) and argument errors are final: retrying them
    only delays the error (eight attempts took minutes per image).
    """
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 4:  # s3fs raises its translation `from` the botocore error
        if isinstance(cur, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
            return False
        if isinstance(cur, ConnectionError | TimeoutError):
            return True
        if isinstance(cur, OSError) and cur.errno in _TRANSIENT_ERRNO:
            return True
        if any(c.__name__ in _TRANSIENT_NAMES for c in type(cur).__mro__):
            return True
        resp = getattr(cur, "response", None)
        if isinstance(resp, dict):
            code = str(resp.get("Error", {}).get("Code", ""))
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500) or code[:1] == "5":
                return True
        cur, seen = cur.__cause__, seen + 1
    return False


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class Location:
    """A resolved storage prefix: protocol, root path inside the filesystem, and options.

    Picklable (Ray ships it to actors); ``options`` (which may hold credentials) is left out of the
    repr so that logging a Location never leaks a secret.
    """

    url: str
    protocol: str
    root: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem (fsspec caches instances per options, so this is cheap)."""
        return fsspec.filesystem(self.protocol, **dict(self.options))

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def path(self, key: str) -> str:
        """Full filesystem path of ``key`` (relative, '/'-separated) under this prefix."""
        return join_key(self.root, key)

    def rel(self, path: str) -> str:
        """Key of a full path under this prefix (inverse of :meth:`path`)."""
        p = path.lstrip("/") if not self.is_local else path
        root = self.root.rstrip("/")
        root_cmp = root.lstrip("/") if not self.is_local else root
        if root_cmp and not p.startswith(root_cmp + "/") and p != root_cmp:
            raise ValueError(f"{path!r} is not under {self.root!r}")
        return p[len(root_cmp) :].lstrip("/")

    def child(self, key: str) -> Location:
        """A Location for a sub-prefix (same filesystem options)."""
        return Location(
            url=self.url.rstrip("/") + "/" + key.strip("/"),
            protocol=self.protocol,
            root=self.path(key),
            options=self.options,
        )


def join_key(root: str, key: str) -> str:
    """Join a root path and a relative '/'-separated key without doubling slashes."""
    key = key.lstrip("/")
    if not root:
        return key
    return root.rstrip("/") + "/" + key if key else root.rstrip("/")


def resolve(url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> Location:
    """Turn a URL or plain path into a :class:`Location`.

    ``s3://bucket/prefix`` -> s3fs (endpoint from ``storage_options`` or ``AWS_ENDPOINT_URL``);
    ``file:///x``, ``/x``, ``./x`` -> local (made absolute); ``memory://x`` -> fsspec memory fs;
    any other fsspec protocol (``gs://``, ``az://``...) is passed through.
    """
    url = os.fspath(url)
    opts: dict[str, Any] = dict(storage_options or {})
    if "://" not in url:
        protocol, path = "file", os.path.abspath(os.path.expanduser(url))
        return Location(url=path, protocol=protocol, root=path, options=opts)
    protocol, _, rest = url.partition("://")
    protocol = protocol.lower()
    if protocol in ("file", "local"):
        path = os.path.abspath("/" + rest.lstrip("/")) if rest.startswith("/") else os.path.abspath(rest)
        return Location(url=url, protocol="file", root=path, options=opts)
    if protocol in ("s3", "s3a"):
        endpoint = _env_endpoint()
        if endpoint and "endpoint_url" not in opts and "endpoint_url" not in opts.get("client_kwargs", {}):
            opts.setdefault("client_kwargs", {})
            opts["client_kwargs"] = {**opts["client_kwargs"], "endpoint_url": endpoint}
        root = rest.strip("/")
        if not root:
            raise ValueError(f"s3 URL needs a bucket: {url!r}")
        return Location(url=url, protocol="s3", root=root, options=opts)
    if protocol == "memory":
        return Location(url=url, protocol="memory", root="/" + rest.strip("/"), options=opts)
    return Location(url=url, protocol=protocol, root=rest.rstrip("/"), options=opts)


def retry(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int = 8,
    base_delay: float = 0.25,
    max_delay: float = 8.0,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, backing off exponentially (with jitter) on transient errors.

    An S3 endpoint that restarts or throttles shows up as connection errors or 5xx for a few
    seconds; eight attempts with delays 0.25, 0.5, ... capped at 8 s ride out ~30 s of outage.
    Only errors :func:`is_transient` accepts are retried. ``FileNotFoundError`` is raised as is
    (callers use it to mean "absent"); any other failure becomes a :class:`StorageError` naming
    ``what`` (a key, never credentials) and the real cause, at once if it is not transient, after the
    last attempt if it is (then with ``transient=True``).
    """
    last: BaseException | None = None
    for i in range(attempts):
        try:
            return fn()
        except (FileNotFoundError, StorageError):
            raise
        except Exception as e:  # noqa: BLE001 - storage errors come in many types; classify them
            if not is_transient(e):
                raise StorageError(f"{what}: {_describe(e)}") from e
            last = e
            if i == attempts - 1:
                break
            if on_retry is not None:
                on_retry(i + 1, e)
            delay = min(max_delay, base_delay * (2**i)) * (0.5 + random.random() / 2)
            time.sleep(delay)
    assert last is not None
    err = StorageError(f"{what}: failed after {attempts} attempts: {_describe(last)}")
    err.transient = True
    raise err from last


def _describe(e: BaseException) -> str:
    """``Type: message`` on one line (OSError's ``[Errno 36] File name too long: 'path'`` kept)."""
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
