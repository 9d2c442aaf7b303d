"""Compress (or decompress) a whole bucket prefix on a Ray cluster: arguments -> library call.

    ray submit cluster.yaml jobs/compress_bucket.py -- --src s3://bucket/photos/ --dst s3://bucket/archive/ \
        --gpu yes --workers 8
    ray job submit --working-dir . -- python jobs/compress_bucket.py --src ... --dst ...
    python jobs/compress_bucket.py --src ./photos --dst ./archive          # local Ray, started for you

The options are the fields of raybb.distributed.CompressJobConfig (DecompressJobConfig with
--decompress), under the same names as `raybb bucket compress`. Credentials come from the standard
AWS chain (instance profile on the cluster); none are taken here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from raybb.distributed.config import (
    API_ONLY,
    DEPRECATED_NAMES,
    CompressJobConfig,
    DecompressJobConfig,
)

#: Options this script had under other names (still accepted, with a warning).
_RENAMED = {"--" + old.replace("_", "-"): "--" + new for old, new in DEPRECATED_NAMES.items() if old != "ray_address"}


class _Deprecated(argparse.Action):
    """Stores the value; warns when an option's old name was used."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        if option_string in _RENAMED:
            print(f"warning: {option_string} is deprecated, use {_RENAMED[option_string]}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _number(v: str) -> int | float:
    """``3`` -> 3, ``2.5`` -> 2.5 (a quality can be either)."""
    try:
        return int(v)
    except ValueError:
        return float(v)


def _scalar(tp: typing.Any) -> typing.Any:
    """The argparse type of a field annotation such as ``int | None`` or ``int | float | None``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if float in args and int in args:
        return _number
    if float in args:
        return float
    if int in args:
        return int
    return str


def _add_setting(p: argparse.ArgumentParser, f: dataclasses.Field, hints: dict) -> None:
    flag = "--" + f.name.replace("_", "-")
    names = [flag] + [o for o, n in _RENAMED.items() if n == flag]
    help_ = f.metadata.get("help", "")
    if f.default is not None and f.default is not False:
        help_ += f" [default: {f.default}]"  # argparse's own would print None: unset = the config's default
    tp = hints[f.name]
    if f.name == "gpu":
        p.add_argument(*names, dest="gpu", choices=["auto", "yes", "no"], default=None, action=_Deprecated, help=help_)
    elif tp is bool and CompressJobConfig.negatable(f.name):
        p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
    elif tp is bool:
        p.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_)
    else:
        p.add_argument(*names, dest=f.name, type=_scalar(tp), default=None, action=_Deprecated, help=help_)


def parser() -> argparse.ArgumentParser:
    """Every CompressJobConfig field as ``--name-with-dashes`` (the API-only dicts excepted)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source prefix (s3://..., file://..., or a path)")
    p.add_argument("--dst", required=True, help="destination prefix")
    p.add_argument("--decompress", action="store_true", help="decode .rbb bitstreams to PNG instead")
    hints = typing.get_type_hints(CompressJobConfig)
    for f in dataclasses.fields(CompressJobConfig):
        if f.name not in API_ONLY:
            _add_setting(p, f, hints)
    p.add_argument("--no-progress", action="store_true")
    return p


def settings(a: argparse.Namespace) -> dict:
    """The options given (None = not given: the config's default applies)."""
    cls = DecompressJobConfig if a.decompress else CompressJobConfig
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(cls) if getattr(a, f.name, None) is not None}
    if a.decompress:
        extra = sorted(
            "--" + f.name.replace("_", "-")
            for f in dataclasses.fields(CompressJobConfig)
            if f.name not in DecompressJobConfig.__dataclass_fields__ and getattr(a, f.name) is not None
        )
        if extra:
            raise ValueError(f"{', '.join(extra)}: compression only (not with --decompress)")
    return given


def main(argv: list[str] | None = None) -> int:
    from raybb.cli import exit_code_for
    from raybb.errors import RaybbError

    p = parser()
    a = p.parse_args(argv)
    try:
        cfg = (DecompressJobConfig if a.decompress else CompressJobConfig)(**settings(a))
    except RaybbError as e:  # a model that cannot be loaded: exit 5, as in `raybb bucket compress`
        print(f"error: {e}", file=sys.stderr)
        return exit_code_for(e)
    except ValueError as e:  # a usage error (exit 2), as in `raybb bucket compress`
        p.error(str(e))

    from raybb.distributed.driver import compress_bucket, decompress_bucket

    bar = None
    progress = None
    if not a.no_progress:
        from tqdm import tqdm

        def progress(ev):  # noqa: ANN001 - JobProgress
            nonlocal bar
            if bar is None:
                bar = tqdm(
                    total=ev.total,
                    unit="img",
                    desc="decompress" if a.decompress else "compress",
                    file=sys.stderr,
                    mininterval=1.0,
                )
            bar.n = ev.done
            bar.set_postfix(ok=ev.ok, err=ev.errors, skip=ev.skipped, workers=ev.workers, refresh=False)
            bar.refresh()

    from raybb.cli import exit_code_for
    from raybb.errors import RaybbError

    try:
        fn = decompress_bucket if a.decompress else compress_bucket
        summary = fn(a.src, a.dst, cfg, progress=progress)
    except RaybbError as e:  # one line and the CLI's exit code (6 for storage), not a traceback
        print(f"error: {e}", file=sys.stderr)
        return exit_code_for(e)
    if bar is not None:
        bar.close()
    out = {k: v for k, v in vars(summary).items() if k != "error_samples"}
    out.update(images_per_s=round(summary.images_per_s, 3), mp_per_s=round(summary.mp_per_s, 4))
    print(json.dumps(out, indent=1))
    for line in summary.error_samples:
        print("error:", line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
