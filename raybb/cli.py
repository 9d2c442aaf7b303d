"""The ``raybb`` command line (the only importer of typer and rich).

Each command parses arguments, calls the library, and renders the result. Exit codes::

    0  success
    1  some inputs failed (the others were processed; details printed)
    2  usage error (bad option or path)
    3  a bitstream could not be decoded (BitstreamError)
    4  an image could not be read (ImageError)
    5  a model could not be loaded (ModelError)
    6  storage failure (StorageError)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from raybb.errors import BitstreamError, ImageError, ModelError, RaybbError, StorageError

app = typer.Typer(
    help="raybb: learned image compression without quantization.", no_args_is_help=True, add_completion=False
)
console = Console(stderr=True)
out = Console()

EXIT_PARTIAL, EXIT_USAGE, EXIT_BITSTREAM, EXIT_IMAGE, EXIT_MODEL, EXIT_STORAGE = 1, 2, 3, 4, 5, 6


def exit_code_for(e: BaseException) -> int:
    if isinstance(e, BitstreamError):
        return EXIT_BITSTREAM
    if isinstance(e, ImageError):
        return EXIT_IMAGE
    if isinstance(e, ModelError):
        return EXIT_MODEL
    if isinstance(e, StorageError):
        return EXIT_STORAGE
    return EXIT_PARTIAL


def _fail(e: BaseException) -> typer.Exit:
    console.print(f"[red]error:[/red] {e}")
    return typer.Exit(exit_code_for(e))


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


def _collect(inputs: list[Path], suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every matching file under the inputs."""
    found: list[tuple[Path, Path]] = []
    for p in inputs:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in suffixes:
                    found.append((f, f.relative_to(p)))
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            console.print(f"[red]error:[/red] no such file or folder: {p}")
            raise typer.Exit(EXIT_USAGE)
    return found


def _targets(files: list[tuple[Path, Path]], output: Path, suffix: str) -> list[tuple[Path, Path]]:
    """(source, output path) pairs, all decided before anything is written.

    Outputs are ``OUT/<path relative to its input, with the suffix replaced>``. Two different
    sources with the same target (``a.png`` and ``a.jpg``; ``d1/x.png`` and ``d2/x.png`` given as
    separate inputs) would overwrite each other: that is a usage error naming them. The same file
    reached twice is done once.
    """
    if len(files) == 1 and output.suffix.lower() == suffix and not output.is_dir():
        return [(files[0][0], output)]
    by_target: dict[Path, list[Path]] = {}
    for f, rel in files:
        srcs = by_target.setdefault(output / rel.with_suffix(suffix), [])
        if all(f.resolve() != s.resolve() for s in srcs):
            srcs.append(f)
    clashes = {t: srcs for t, srcs in by_target.items() if len(srcs) > 1}
    if clashes:
        for t, srcs in sorted(clashes.items()):
            console.print(f"[red]error:[/red] {' and '.join(map(str, srcs))} would all be written to {t}")
        console.print(
            "nothing was written: give inputs whose names differ without their suffix, or compress them "
            "into different output folders (`raybb bucket compress` names outputs <name-with-suffix>.rbb)"
        )
        raise typer.Exit(EXIT_USAGE)
    return [(srcs[0], t) for t, srcs in by_target.items()]


def _run_files(pairs: list[tuple[Path, Path]], description: str, work) -> None:
    """Run ``work(src) -> (bytes, message)`` for each (src, dst), writing dst atomically.

    A failing input is reported and skipped; the exit code says whether some or all failed.
    """
    failures = 0
    last_error: BaseException | None = None
    with _progress() as bar:
        task = bar.add_task(description, total=len(pairs))
        for src, dst in pairs:
            try:
                data, message = work(src)
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(dst.name + ".part")
                tmp.write_bytes(data)
                tmp.replace(dst)
                out.print(f"{src} -> {dst}  {message}")
            except (RaybbError, OSError) as e:
                failures += 1
                last_error = e
                console.print(f"[red]failed:[/red] {src}: {e}")
            bar.advance(task)
    if failures:
        raise typer.Exit(exit_code_for(last_error) if failures == len(pairs) else EXIT_PARTIAL)


ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Model name (see `raybb models`) or .safetensors path.")
]
QualityOpt = Annotated[
    float | None,
    typer.Option(
        "--quality",
        "-q",
        help="A point on the rate curve (1 = lowest rate). A variable-rate model takes any value in 1..8 "
        "(alone: the default model's; with --model: that model's); for the PLN family N picks pln-qN.",
    ),
]
SamplerOpt = Annotated[
    str | None,
    typer.Option(
        "--sampler",
        "-s",
        help="Sampler pipeline: pfr-dither (default), pfr, pfr-max, pfr-exact, is-gs, rs, 'L2/L1', 'pfr:22,14,128,22'",
    ),
]


def _check_device(device: str | None) -> str | None:
    """A usage error, not a traceback, for a device torch cannot use on this machine."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise typer.BadParameter(f"unknown torch device {device!r} (e.g. cpu, cuda, cuda:1)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter(f"{device!r}: no CUDA device is available on this machine")
    return device


DeviceOpt = Annotated[str | None, typer.Option("--device", help="torch device (default: cpu).", callback=_check_device)]


def _check_effort(effort: int) -> int:
    from raybb.refine import effort_level

    try:
        effort_level(effort)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    return effort


EffortOpt = Annotated[
    int,
    typer.Option(
        "--effort", "-e", callback=_check_effort,
        help="Encoder effort 0-3: 0 = fastest; higher refines each image's posterior first (slower, "
        "fewer bits for the same quality; see docs/effort.md).",
    ),
]  # fmt: skip


MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse images (and bitstreams whose header declares images) above this many pixels.",
    ),
]
TilePixelsOpt = Annotated[
    int | None,
    typer.Option(
        "--tile-pixels",
        min=65536,
        help="Run the transforms in tiles of at most this many pixels (memory bound; default: sized for the device).",
    ),
]


def _load(
    model: str | None,
    quality: float | None,
    sampler: str | None,
    device: str | None,
    max_pixels: int | None = None,
    tile_pixels: int | None = None,
):
    from raybb.codec import load_codec
    from raybb.imageio import DEFAULT_MAX_PIXELS

    try:
        return load_codec(
            model,
            quality=quality,
            sampler=sampler,
            device=device,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
            tile_pixels=tile_pixels,
        )
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE) from e
    except RaybbError as e:
        raise _fail(e) from e


@app.command()
def compress(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .rbb file (one input) or folder.")],
    model: ModelOpt = None,
    quality: QualityOpt = None,
    sampler: SamplerOpt = None,
    device: DeviceOpt = None,
    seed: Annotated[int | None, typer.Option(help="Shared-randomness seed (default: derived from the pixels).")] = None,
    effort: EffortOpt = 0,
    metric: Annotated[str, typer.Option(help="What refinement (effort >= 1) optimises: mse or ms-ssim.")] = "mse",
    target_bpp: Annotated[float | None, typer.Option(help="Aim at this bpp per image (effort >= 1).")] = None,
    target_psnr: Annotated[float | None, typer.Option(help="Aim at this PSNR per image (effort >= 1).")] = None,
    max_pixels: MaxPixelsOpt = 100_000_000,
    tile_pixels: TilePixelsOpt = None,
) -> None:
    """Compress images to .rbb bitstreams.

    One input file with -o NAME.rbb writes NAME.rbb. Otherwise OUT is a folder: a file input goes to
    OUT/<stem>.rbb, a folder input's images to OUT/<path inside the folder, suffix .rbb> (so
    `raybb decompress OUT -o DIR` restores the same tree as .png). Inputs that would get the same
    output name (a.png and a.jpg, or d1/x.png and d2/x.png) are refused before anything is written.
    """
    import warnings

    from raybb.codec import _check_effort as check
    from raybb.codec import _check_targets
    from raybb.imageio import IMAGE_SUFFIXES, ImageWarning
    from raybb.metrics import ms_ssim_missing_reason

    try:
        check(effort, metric)
        _check_targets(target_bpp, target_psnr)
        if (target_bpp is not None or target_psnr is not None) and effort == 0:
            raise ValueError("--target-bpp/--target-psnr need --effort 1 or more")
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE) from e
    files = _collect(inputs, IMAGE_SUFFIXES)
    if not files:
        console.print("[red]error:[/red] no images found")
        raise typer.Exit(EXIT_USAGE)
    codec = _load(model, quality, sampler, device, max_pixels, tile_pixels)
    from raybb.tiling import limit_heap_retention

    limit_heap_retention()  # freed tiles go back to the OS (peak RSS)

    def work(src: Path) -> tuple[bytes, str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImageWarning)
            res = codec.compress_with_stats(src, seed=seed, effort=effort, metric=metric,
                                            target_bpp=target_bpp, target_psnr=target_psnr)  # fmt: skip
        notes = [str(w.message) for w in caught if issubclass(w.category, ImageWarning)]
        if res.ms_ssim != res.ms_ssim:  # NaN: too small or too large for MS-SSIM
            notes.append(ms_ssim_missing_reason(res.height, res.width))
        for note in notes:
            console.print(f"[yellow]warning:[/yellow] {src}: {note}")
        ms = "n/a" if res.ms_ssim != res.ms_ssim else f"{res.ms_ssim:.4f}"
        return res.data, (
            f"{len(res.data)} B  {res.bpp:.3f} bpp  PSNR {res.psnr:.2f} dB  MS-SSIM {ms}  {res.encode_seconds:.1f}s"
            + (f" (effort {effort}: {res.refine_steps} steps, {res.refine_seconds:.1f}s)" if effort else "")
        )

    _run_files(_targets(files, output, ".rbb"), "compressing", work)


@app.command()
def decompress(
    inputs: Annotated[list[Path], typer.Argument(help=".rbb files or folders.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .png file (one input) or folder.")],
    model: ModelOpt = None,
    device: DeviceOpt = None,
    max_pixels: MaxPixelsOpt = 100_000_000,
    tile_pixels: TilePixelsOpt = None,
) -> None:
    """Decompress .rbb bitstreams to PNG (the model is found from the bitstream's fingerprint)."""
    from raybb.codec import Codec
    from raybb.imageio import encode_png

    files = _collect(inputs, (".rbb",))
    if not files:
        console.print("[red]error:[/red] no .rbb files found")
        raise typer.Exit(EXIT_USAGE)
    codecs: dict[bytes, Codec] = {}
    from raybb.tiling import limit_heap_retention

    limit_heap_retention()  # freed tiles go back to the OS (peak RSS)

    def work(src: Path) -> tuple[bytes, str]:
        from raybb.errors import DecodeOutOfMemory

        data = src.read_bytes()
        rgb = _codec_for(data, codecs, model, device, max_pixels, tile_pixels).decompress(data)
        try:
            return encode_png(rgb), f"{rgb.shape[1]}x{rgb.shape[0]}"
        except MemoryError as e:
            raise DecodeOutOfMemory(f"out of memory writing the PNG: {e}") from e

    _run_files(_targets(files, output, ".png"), "decompressing", work)


def _codec_for(
    data: bytes,
    cache: dict,
    model: str | None,
    device: str | None,
    max_pixels: int | None = None,
    tile_pixels: int | None = None,
):
    """The codec whose model wrote ``data``: --model if given, else looked up by fingerprint.

    A header declaring more than ``max_pixels`` is refused here, before a model is even loaded."""
    from raybb import bitstream
    from raybb.codec import check_pixels, load_codec
    from raybb.errors import ModelMismatch
    from raybb.imageio import DEFAULT_MAX_PIXELS

    c = bitstream.parse(data)
    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    check_pixels(c, max_pixels)
    kw = {"device": device, "max_pixels": max_pixels, "tile_pixels": tile_pixels}
    if c.fingerprint in cache:
        return cache[c.fingerprint]
    if model is not None:
        codec = load_codec(model, **kw)
    else:
        from raybb.registry import find_by_fingerprint

        path = find_by_fingerprint(c.fingerprint)
        if path is None:
            raise ModelMismatch(f"no installed model has fingerprint {c.fingerprint.hex()} (see `raybb models`)")
        codec = load_codec(str(path), **kw)
    cache[c.fingerprint] = codec
    return codec


@app.command()
def inspect(
    files: Annotated[list[Path], typer.Argument(help=".rbb files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a bitstream's header, sections and sizes (no model needed)."""
    from raybb import bitstream
    from raybb.coding import get_sampler

    code = 0
    for f in files:
        try:
            data = f.read_bytes()
            c = bitstream.parse(data)
        except (OSError, BitstreamError) as e:
            console.print(f"[red]{f}:[/red] {e}")
            code = exit_code_for(e) if isinstance(e, RaybbError) else EXIT_USAGE
            continue
        info = {
            "file": str(f),
            "bytes": len(data),
            "format_version": c.version,
            "model_fingerprint": c.fingerprint.hex(),
            "width": c.width,
            "height": c.height,
            "mode": "RGB8",
            "seed": c.seed,
            "bpp": len(data) * 8 / (c.width * c.height),
            "header_bytes": c.header_bytes,
            "sections": [],
        }
        for s in c.sections:
            try:
                name = get_sampler(s.sampler_id, tuple(s.params)).name
            except Exception:
                name = f"unknown({s.sampler_id})"
            info["sections"].append(
                {"level": s.level, "sampler": name, "sampler_id": s.sampler_id, "params": list(s.params),
                 "dims": s.num_dims, "payload_bytes": len(s.payload)}
            )  # fmt: skip
        if as_json:
            out.print_json(json.dumps(info))
            continue
        t = Table(title=f"{f}  ({len(data)} bytes, {info['bpp']:.4f} bpp)")
        t.add_column("field")
        t.add_column("value")
        for k in ("format_version", "model_fingerprint", "width", "height", "mode", "seed", "header_bytes"):
            t.add_row(k, str(info[k]))
        for s in info["sections"]:
            t.add_row(
                f"level {s['level']}",
                f"{s['sampler']} params={s['params']} dims={s['dims']} payload={s['payload_bytes']} B",
            )
        out.print(t)
    raise typer.Exit(code)


def _train_opt(name: str, *decls: str, **kw):
    """``--name`` with the help text both training commands use (raybb.train.loop.TrainConfig)."""
    from raybb.train.loop import MODEL_OPTIONS, TrainConfig, option_flag

    text = MODEL_OPTIONS.get(name) or TrainConfig.help_for(name)
    return typer.Option(option_flag(name), *decls, help=text, **kw)


def _deprecated(old: str, new: str, value, default=None):
    """The value of a deprecated option, with a warning when it was given."""
    if value is not None and value != default:
        console.print(f"[yellow]warning:[/yellow] {old} is deprecated, use {new}")
    return value


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run directory (checkpoint/, metrics.jsonl).")],
    data: Annotated[list[str], _train_opt("data")] = [],  # noqa: B006
    exclude: Annotated[list[str], _train_opt("exclude")] = [],  # noqa: B006
    val_data: Annotated[list[str], _train_opt("val_data")] = [],  # noqa: B006
    val_images: Annotated[int, _train_opt("val_images", min=0)] = 12,
    variant: Annotated[str, _train_opt("variant")] = "pln",
    channels: Annotated[str, _train_opt("channels")] = "64,96,96,24",
    beta: Annotated[float, _train_opt("beta")] = 0.05,
    steps: Annotated[int, _train_opt("steps", min=1)] = 20000,
    batch: Annotated[int, _train_opt("batch", min=1)] = 8,
    patch: Annotated[int, _train_opt("patch", min=1)] = 128,
    lr: Annotated[float, _train_opt("lr")] = 5e-4,
    lr_final_factor: Annotated[float, _train_opt("lr_final_factor")] = 0.2,
    warmup_steps: Annotated[int, _train_opt("warmup_steps", min=0)] = 1000,
    grad_clip: Annotated[float, _train_opt("grad_clip")] = 5.0,
    init_weights: Annotated[Path | None, _train_opt("init_weights")] = None,
    seed: Annotated[int, _train_opt("seed")] = 0,
    log_every: Annotated[int, _train_opt("log_every", min=1)] = 50,
    val_every: Annotated[int, _train_opt("val_every", min=0)] = 1000,
    checkpoint_every: Annotated[int, _train_opt("checkpoint_every", min=1)] = 500,
    threads: Annotated[int, _train_opt("num_threads", min=0)] = 0,
    precision: Annotated[str, _train_opt("precision")] = "fp32",
    resume: Annotated[bool, typer.Option(help="Resume from OUT/checkpoint when present.")] = True,
    device: Annotated[
        str, typer.Option("--device", help="torch device to train on, e.g. 'cuda'.", callback=_check_device)
    ] = "cpu",
    warmup: Annotated[int | None, typer.Option("--warmup", hidden=True, help="Deprecated: --warmup-steps.")] = None,
) -> None:
    """Train a ladder network (the same loop and options as `raybb sweep`).

    Defaults: the shipped models' architecture (pln, 64,96,96,24) and the default model's β (0.05).
    The shipped models were fine-tuned in stages with other settings: docs/training.md.
    """
    from raybb.train.loop import TrainConfig, model_config, train_to_directory

    if _deprecated("--warmup", "--warmup-steps", warmup) is not None:
        warmup_steps = warmup
    try:
        model = model_config(channels, variant)
        defaults = TrainConfig()
        cfg = TrainConfig(
            data=list(data) or defaults.data,
            exclude=list(exclude) or defaults.exclude,
            val_data=list(val_data) if val_data else ([] if data else defaults.val_data),
            val_images=val_images, model=model, beta=beta, steps=steps, batch=batch, patch=patch, lr=lr,
            lr_final_factor=lr_final_factor, warmup_steps=warmup_steps, grad_clip=grad_clip, seed=seed,
            log_every=log_every, val_every=val_every, checkpoint_every=checkpoint_every, num_threads=threads,
            precision=precision,
        )  # fmt: skip
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE) from e
    with _progress() as bar:
        task = bar.add_task("training", total=steps)

        def on_log(m: dict) -> None:
            bar.update(task, completed=m["step"])
            msg = f"step {m['step']}  loss {m['loss']:.4f}  bpp {m['bpp']:.3f}  PSNR {m['psnr']:.2f}"
            if "val_psnr_sample" in m:
                msg += f"  | val bpp {m['val_bpp']:.3f}  PSNR {m['val_psnr_sample']:.2f}"
            bar.console.print(msg)

        try:
            train_to_directory(
                cfg,
                out_dir,
                resume=resume,
                init_weights=str(init_weights) if init_weights else None,
                on_log=on_log,
                device=device,
            )
        except (ValueError, FileNotFoundError) as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(EXIT_USAGE) from e
        except RaybbError as e:
            raise _fail(e) from e
    out.print(f"weights: {out_dir / 'checkpoint' / 'model.safetensors'}")


@app.command()
def widen(
    source: Annotated[str, typer.Argument(help="Model name (see `raybb models`) or .safetensors path.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the widened weights.")],
    channels: Annotated[int, typer.Option(help="New level-1 transform width N (>= the source's).")] = 128,
    noise: Annotated[float, typer.Option(help="Unequal weight shares of duplicated channels (0..1).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for which channels are copied and their shares.")] = 0,
) -> None:
    """Widen a model's transforms (N) without changing its output: a start for `raybb train --init-weights`."""
    from raybb.model.widen import widen_weights_file
    from raybb.registry import resolve_model

    try:
        fp = widen_weights_file(resolve_model(source), output, channels, noise=noise, seed=seed)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE) from e
    except RaybbError as e:
        raise _fail(e) from e
    out.print(f"{output}  N={channels}  fingerprint {fp[:16]}")


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List installed models (shipped and $RAYBB_MODELS_DIR): architecture, rate or quality range, and
    the measured Kodak rate/quality (a variable-rate model's whole curve when its sidecar has one)."""
    from raybb.registry import default_model_name, list_models

    infos = list_models()
    try:
        default = default_model_name(infos)
    except ModelError:
        default = None
    if as_json:
        out.print_json(json.dumps([
            {"name": i.name, "path": str(i.path), "fingerprint": i.fingerprint, "arch": i.arch,
             "variant": i.variant, "beta": i.beta, "rate_levels": i.rate_levels,
             "quality": i.quality, "quality_range": i.quality_range, "beta_range": i.beta_range,
             "kodak_bpp": i.kodak_bpp, "kodak_psnr": i.kodak_psnr, "kodak_ms_ssim": i.kodak_ms_ssim,
             "kodak_curve": list(i.kodak_curve), "source": i.source, "default": i.name == default}
            for i in infos
        ]))  # fmt: skip
        return

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    t = Table(title="raybb models")
    for col in ("name", "quality", "arch", "variant", "β", "Kodak bpp", "PSNR dB", "MS-SSIM", "fingerprint", "source"):
        t.add_column(col)
    for i in infos:
        if i.quality_range:
            quality = f"{i.quality_range[0]:g}-{i.quality_range[1]:g}"
            beta = f"{i.beta_range[1]:g}-{i.beta_range[0]:g}"
        else:
            quality, beta = fmt(i.quality, "d"), fmt(i.beta, "g")
        t.add_row(
            i.name + (" (default)" if i.name == default else ""), quality, i.arch, i.variant or "-", beta,
            fmt(i.kodak_bpp, ".3f"), fmt(i.kodak_psnr, ".2f"), fmt(i.kodak_ms_ssim, ".4f"), i.fingerprint[:16],
            i.source,
        )  # fmt: skip
    out.print(t)
    for i in infos:
        if not i.kodak_curve:
            continue
        c = Table(title=f"{i.name}: Kodak curve ({i.rate_levels} rate indices)")
        for col in ("quality", "rate index", "bpp", "PSNR dB", "MS-SSIM"):
            c.add_column(col)
        for pt in i.kodak_curve:
            c.add_row(fmt(pt["quality"], "g"), fmt(pt.get("rate"), "d"), fmt(pt["bpp"], ".3f"),
                      fmt(pt["psnr"], ".2f"), fmt(pt["ms_ssim"], ".4f"))  # fmt: skip
        out.print(c)


@app.command("eval")
def eval_(
    folder: Annotated[Path, typer.Argument(help="Folder of images (e.g. the 24 Kodak images).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where tables and plots go.")] = Path("raybb-eval"),
    model: Annotated[
        list[str], typer.Option("--model", "-m", help="raybb model(s); default: every installed model.")
    ] = [],  # noqa: B006
    sampler: SamplerOpt = None,
    baseline: Annotated[
        list[str], typer.Option("--baseline", "-b", help="Classical codecs (jpeg, webp, avif, jpegxl).")
    ] = [],  # noqa: B006
    no_baselines: Annotated[bool, typer.Option("--no-baselines", help="Evaluate raybb only.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N images.")] = None,
    theoretical: Annotated[bool, typer.Option(help="Also measure the exact-sample (theoretical) point.")] = True,
    quality: Annotated[
        list[float],
        typer.Option(
            "--quality",
            "-q",
            help="Points on a variable-rate model's curve (repeatable; default: the integer qualities 1..8). "
            "Fixed-rate models are one point each.",
        ),
    ] = [],  # noqa: B006
    device: DeviceOpt = None,
) -> None:
    """Rate-distortion evaluation against classical codecs: tables (CSV/Parquet), BD-rate and RD plots.

    A variable-rate model is evaluated at several qualities, so it draws its whole curve alone."""
    from raybb.baselines import baseline_names
    from raybb.codec import Codec, load_codec
    from raybb.evaluation import evaluate_folder, markdown_table
    from raybb.registry import list_models

    if not folder.is_dir():
        console.print(f"[red]error:[/red] not a folder: {folder}")
        raise typer.Exit(EXIT_USAGE)
    names = list(model) or [i.name for i in list_models()]
    if not names:
        console.print("[red]error:[/red] no raybb model installed; pass --model PATH")
        raise typer.Exit(EXIT_MODEL)
    bases = [] if no_baselines else (list(baseline) or baseline_names())
    unknown = [b for b in bases if b not in baseline_names()]
    if unknown:
        console.print(f"[red]error:[/red] unknown baseline(s) {unknown}; available: {baseline_names()}")
        raise typer.Exit(EXIT_USAGE)
    from raybb.levels import QUALITY_MAX, QUALITY_MIN

    qualities = list(quality) or [float(q) for q in range(int(QUALITY_MIN), int(QUALITY_MAX) + 1)]
    try:
        codecs = []
        for n in names:
            c = load_codec(n, sampler=sampler, device=device)
            if not c.model.rate_levels:
                codecs.append((Path(n).stem, c))
                continue
            for q in qualities:  # one Codec per point, sharing the loaded weights
                point = Codec(c.loaded, sampler, device=c.device, model_name=c.model_name, quality=q)
                codecs.append((f"{Path(n).stem}@q{q:g}", point))
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE) from e
    except RaybbError as e:
        raise _fail(e) from e
    with _progress() as bar:
        task = bar.add_task("evaluating", total=None)

        def progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total, description=message[:40])

        rep = evaluate_folder(
            folder, raybb_codecs=codecs, baselines=bases, out_dir=out_dir, progress=progress, limit=limit,
            theoretical=theoretical,
        )  # fmt: skip
    cols = [c for c in ("codec", "quality", "bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s",
                        "theoretical_bpp", "theoretical_psnr", "level2_share") if c in rep.average.columns]  # fmt: skip
    typer.echo(markdown_table(rep.average[cols]))  # plain echo: rich would re-wrap table rows
    if len(rep.bd):
        typer.echo("")
        typer.echo(markdown_table(rep.bd))
    for k, v in rep.files.items():
        out.print(f"{k}: {v}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def sweep(ctx: typer.Context) -> None:
    """β-sweep training on Ray Train/Tune (one model per β and variant); `raybb sweep --help` for options."""
    from raybb.distributed.train import sweep_main

    raise typer.Exit(sweep_main(ctx.args))


from raybb.distributed.config import CompressJobConfig  # noqa: E402 - pure: the job settings' names and help
from raybb.distributed.partition import DEFAULT_SHARD_BYTES, DEFAULT_SHARD_IMAGES, DEFAULT_SHARD_PIXELS  # noqa: E402
from raybb.imageio import DEFAULT_MAX_PIXELS  # noqa: E402

bucket_app = typer.Typer(
    help="Batch jobs on Ray over folders or object storage (s3://, file://, paths).", no_args_is_help=True
)
app.add_typer(bucket_app, name="bucket")


def _run_bucket(kind: str, src: str, dst: str, **settings) -> None:
    from raybb.distributed.config import CompressJobConfig, DecompressJobConfig

    try:
        cfg = (CompressJobConfig if kind == "compress" else DecompressJobConfig)(**settings)
    except RaybbError as e:  # a model that cannot be loaded: exit 5, as in `raybb compress`
        raise _fail(e) from e
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE) from e
    from raybb.distributed.driver import compress_bucket, decompress_bucket

    with _progress() as bar:
        task = bar.add_task(kind, total=None)

        def progress(ev) -> None:
            bar.update(
                task, completed=ev.done, total=ev.total,
                description=f"{kind} ok={ev.ok} err={ev.errors} {ev.images_per_s:.2f} img/s",
            )  # fmt: skip

        try:
            fn = compress_bucket if kind == "compress" else decompress_bucket
            summary = fn(src, dst, cfg, progress=progress)
        except RaybbError as e:
            raise _fail(e) from e
    out.print(
        f"{kind}: {summary.ok} ok, {summary.errors} errors, {summary.skipped} skipped, "
        f"{summary.already_done} already done (of {summary.total}) in {summary.seconds:.1f}s "
        f"({summary.images_per_s:.2f} img/s, {summary.mp_per_s:.3f} MP/s); manifest: {summary.manifest}"
    )
    for line in summary.error_samples:
        console.print(f"[yellow]error row:[/yellow] {line}")
    if summary.errors:
        raise typer.Exit(EXIT_PARTIAL)


def _job_opt(name: str, **kw):
    """``--name-with-dashes`` (and ``--no-...`` for a switch) with the help text of job setting ``name``."""
    flag = "--" + name.replace("_", "-")
    decl = f"{flag}/--no-{flag[2:]}" if CompressJobConfig.negatable(name) else flag
    return typer.Option(decl, help=CompressJobConfig.help_for(name), **kw)


# One option per job setting, named after the CompressJobConfig/DecompressJobConfig field.
WorkersOpt = Annotated[int | None, _job_opt("workers", min=1)]
GpuOpt = Annotated[str, _job_opt("gpu")]
CpusPerWorkerOpt = Annotated[float, _job_opt("cpus_per_worker")]
WorkerMemoryOpt = Annotated[int | None, _job_opt("worker_memory_mb", min=1)]
JobTilePixelsOpt = Annotated[int | None, _job_opt("tile_pixels", min=65536)]
JobMaxPixelsOpt = Annotated[int, _job_opt("max_pixels", min=1)]
ShardSizeOpt = Annotated[int, _job_opt("shard_size", min=1)]
ShardBytesOpt = Annotated[int, _job_opt("shard_bytes", min=1)]
ShardPixelsOpt = Annotated[int, _job_opt("shard_pixels", min=1)]
MaxInFlightOpt = Annotated[int | None, _job_opt("max_in_flight", min=1)]
MaxAttemptsOpt = Annotated[int, _job_opt("max_attempts", min=1)]
ResumeOpt = Annotated[bool, _job_opt("resume")]
OverwriteOpt = Annotated[bool, _job_opt("overwrite")]
ManifestOpt = Annotated[str | None, _job_opt("manifest")]
AllowEmptyOpt = Annotated[bool, _job_opt("allow_empty")]
AddressOpt = Annotated[str | None, _job_opt("address")]
FlushRowsOpt = Annotated[int, _job_opt("flush_rows", min=1)]
FlushSecondsOpt = Annotated[float, _job_opt("flush_seconds")]
ActorStartTimeoutOpt = Annotated[float, _job_opt("actor_start_timeout")]
CodecFactoryOpt = Annotated[str | None, _job_opt("codec_factory")]
JobMetricOpt = Annotated[str, _job_opt("metric")]
TargetBppOpt = Annotated[float | None, _job_opt("target_bpp")]
TargetPsnrOpt = Annotated[float | None, _job_opt("target_psnr")]
VerifyOpt = Annotated[bool, _job_opt("verify")]


@bucket_app.command("compress")
def bucket_compress(
    src: Annotated[str, typer.Argument(help="Source prefix: folder, file://, s3://bucket/prefix/.")],
    dst: Annotated[str, typer.Argument(help="Destination prefix for .rbb files and the manifest.")],
    model: ModelOpt = None,
    quality: QualityOpt = None,
    sampler: SamplerOpt = None,
    effort: EffortOpt = 0,
    metric: JobMetricOpt = "mse",
    target_bpp: TargetBppOpt = None,
    target_psnr: TargetPsnrOpt = None,
    verify: VerifyOpt = False,
    workers: WorkersOpt = None,
    gpu: GpuOpt = "auto",
    cpus_per_worker: CpusPerWorkerOpt = 0.5,
    worker_memory_mb: WorkerMemoryOpt = None,
    tile_pixels: JobTilePixelsOpt = None,
    max_pixels: JobMaxPixelsOpt = DEFAULT_MAX_PIXELS,
    shard_size: ShardSizeOpt = DEFAULT_SHARD_IMAGES,
    shard_bytes: ShardBytesOpt = DEFAULT_SHARD_BYTES,
    shard_pixels: ShardPixelsOpt = DEFAULT_SHARD_PIXELS,
    max_in_flight: MaxInFlightOpt = None,
    max_attempts: MaxAttemptsOpt = 3,
    resume: ResumeOpt = True,
    overwrite: OverwriteOpt = False,
    manifest: ManifestOpt = None,
    allow_empty: AllowEmptyOpt = False,
    address: AddressOpt = None,
    flush_rows: FlushRowsOpt = 1000,
    flush_seconds: FlushSecondsOpt = 20.0,
    actor_start_timeout: ActorStartTimeoutOpt = 900.0,
    codec_factory: CodecFactoryOpt = None,
) -> None:
    """Compress every image under SRC to DST on Ray actors and write a Parquet manifest.

    The options are the fields of raybb.CompressJobConfig, the same names as in jobs/compress_bucket.py.
    """
    _run_bucket("compress", src, dst, **_settings(locals()))


@bucket_app.command("decompress")
def bucket_decompress(
    src: Annotated[str, typer.Argument(help="Prefix holding .rbb files.")],
    dst: Annotated[str, typer.Argument(help="Destination prefix for PNG files and the manifest.")],
    model: ModelOpt = None,
    sampler: SamplerOpt = None,
    workers: WorkersOpt = None,
    gpu: GpuOpt = "auto",
    cpus_per_worker: CpusPerWorkerOpt = 0.5,
    worker_memory_mb: WorkerMemoryOpt = None,
    tile_pixels: JobTilePixelsOpt = None,
    max_pixels: JobMaxPixelsOpt = DEFAULT_MAX_PIXELS,
    shard_size: ShardSizeOpt = DEFAULT_SHARD_IMAGES,
    shard_bytes: ShardBytesOpt = DEFAULT_SHARD_BYTES,
    shard_pixels: ShardPixelsOpt = DEFAULT_SHARD_PIXELS,
    max_in_flight: MaxInFlightOpt = None,
    max_attempts: MaxAttemptsOpt = 3,
    resume: ResumeOpt = True,
    overwrite: OverwriteOpt = False,
    manifest: ManifestOpt = None,
    allow_empty: AllowEmptyOpt = False,
    address: AddressOpt = None,
    flush_rows: FlushRowsOpt = 1000,
    flush_seconds: FlushSecondsOpt = 20.0,
    actor_start_timeout: ActorStartTimeoutOpt = 900.0,
    codec_factory: CodecFactoryOpt = None,
) -> None:
    """Decode every .rbb under SRC to PNG under DST on Ray actors (each with the model its fingerprint
    names: --model, else any installed model). Options: raybb.distributed.DecompressJobConfig."""
    _run_bucket("decompress", src, dst, **_settings(locals()))


def _settings(local_vars: dict) -> dict:
    return {k: v for k, v in local_vars.items() if k not in ("src", "dst")}


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
