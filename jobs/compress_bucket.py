"""Compress (or decompress) a whole bucket prefix on a Ray cluster: arguments -> library call.

    ray submit cluster.yaml jobs/compress_bucket.py -- --src s3://bucket/photos/ --dst s3://bucket/archive/ \
        --gpu yes --workers 8
    ray job submit --working-dir . -- python jobs/compress_bucket.py --src ... --dst ...
    python jobs/compress_bucket.py --src ./photos --dst ./archive          # local Ray, started for you

Credentials come from the standard AWS chain (instance profile on the cluster); none are taken here.
"""

from __future__ import annotations

import argparse
import json
import sys

from raybb.refine import EFFORTS

_RENAMED = {"--num-workers": "--workers", "--use-gpu": "--gpu"}


class _Deprecated(argparse.Action):
    """Stores the value; warns when an option's old name was used."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        if option_string in _RENAMED:
            print(f"warning: {option_string} is deprecated, use {_RENAMED[option_string]}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source prefix (s3://..., file://..., or a path)")
    p.add_argument("--dst", required=True, help="destination prefix")
    p.add_argument("--decompress", action="store_true", help="decode .rbb bitstreams to PNG instead")
    p.add_argument("--manifest", default=None, help="manifest URL (default <dst>/_manifest.parquet)")
    # Same names as `raybb bucket compress`; --num-workers/--use-gpu still work (deprecated).
    p.add_argument(
        "--workers",
        "--num-workers",
        dest="workers",
        type=int,
        default=None,
        action=_Deprecated,
        help="actors (default: one per GPU or CPU)",
    )
    p.add_argument(
        "--gpu",
        "--use-gpu",
        dest="gpu",
        choices=["auto", "yes", "no"],
        default="auto",
        action=_Deprecated,
        help="'yes' on autoscaling clusters whose GPU workers start at 0",
    )
    p.add_argument("--shard-size", type=int, default=16, help="images per shard")
    p.add_argument("--verify", action="store_true", help="decode each bitstream before marking it ok")
    p.add_argument("--model", default=None)
    p.add_argument("--sampler", default=None)
    p.add_argument(
        "--effort",
        type=int,
        default=0,
        choices=list(EFFORTS),
        help="encoder effort: 0 = fastest; higher refines each image's posterior (slower, fewer bits)",
    )
    p.add_argument("--no-resume", action="store_true", help="do not skip images finished by earlier runs")
    p.add_argument("--overwrite", action="store_true", help="recompress outputs that exist without a row")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or local)")
    p.add_argument("--allow-empty", action="store_true", help="accept a source that lists nothing (else exit 6)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

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

    use_gpu = {"auto": "auto", "yes": True, "no": False}[a.gpu]
    common = dict(
        manifest=a.manifest,
        num_workers=a.workers,
        use_gpu=use_gpu,
        shard_size=a.shard_size,
        model=a.model,
        sampler=a.sampler,
        resume=not a.no_resume,
        overwrite=a.overwrite,
        progress=progress,
        ray_address=a.address,
        allow_empty=a.allow_empty,
    )
    from raybb.cli import exit_code_for
    from raybb.errors import RaybbError

    try:
        if a.decompress:
            summary = decompress_bucket(a.src, a.dst, **common)
        else:
            summary = compress_bucket(a.src, a.dst, verify=a.verify, effort=a.effort, **common)
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
