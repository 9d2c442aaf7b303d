"""Fuzz the decoders with mutated bitstreams whose checksums are recomputed, and count what happens.

    python benchmarks/fuzz_bitstreams.py --cases 100000            # the size the issue asks for
    python benchmarks/fuzz_bitstreams.py --cases 20000 --stem fuzz_bitstreams_quick
        # -> benchmarks/results/<stem>.{json,md}

A CRC catches random damage before any parser sees it, so a fuzzer that only flips bits tests the
CRC. Here every mutated stream gets valid CRCs again, so the mutation reaches the parsers:

* ``payload:<sampler>``: a sampler payload (``crc32(body) | body``) made on a synthetic latent,
  mutated in its body, CRC recomputed, given to ``sampler.decode``.
* ``container:<pipeline>``: a whole ``.rbb`` file from a small real model (tests/codec/expected/
  tiny.safetensors), given to ``Codec.decompress``. Half the cases mutate a section payload's body
  (its CRC and the container's recomputed, so the sampler decoders and the network run on it), half
  mutate the file as a whole (container CRC recomputed): those reach the header and section framing,
  and the ones that land inside a payload are stopped by that payload's own CRC (counted apart as
  ``(payload CRC)``).

Mutations: bit flips, random byte values, 32-bit fields set to 0/1/2^31-1/2^32-1, truncation,
appended/inserted/deleted/duplicated/zeroed ranges, and random garbage of random length.

Outcomes per target and mutation: ``raised <Error>`` (a ``BitstreamError`` subclass: what must
happen for garbage), ``decoded`` (the parser accepted it and returned a finite result of the right
shape: possible when a mutation lands on bits that only change the sample), and the failures the
harness looks for: ``CRASH <Type>`` (any other exception), ``BAD_OUTPUT`` (wrong shape, dtype or
non-finite values), ``HANG`` (no answer within ``--case-timeout`` s). The script exits 1 if any
failure was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import sys
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raybb import bitstream  # noqa: E402
from raybb.coding import (  # noqa: E402
    DitheredPFRSampler,
    GreedySampler,
    ImportanceSampler,
    PFRSampler,
    RejectionSampler,
    StreamKey,
)
from raybb.coding.synthetic import make_pair  # noqa: E402
from raybb.errors import BitstreamError  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TINY = ROOT / "tests" / "codec" / "expected" / "tiny.safetensors"

MUTATIONS = (
    "bitflip", "byteset", "field32", "truncate", "append", "insert", "delete", "duplicate", "zero", "garbage",
)  # fmt: skip
FAILURES = ("CRASH", "BAD_OUTPUT", "HANG")


class _Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001 - signal handler
    raise _Hang


def mutate(body: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutation of ``body`` (may return it shorter, longer, or empty)."""
    b = bytearray(body)
    n = len(b)

    def pos(extra: int = 0) -> int:
        return int(rng.integers(0, max(1, n + extra)))

    if kind == "bitflip" and n:
        for _ in range(int(rng.integers(1, 5))):
            b[pos()] ^= 1 << int(rng.integers(8))
    elif kind == "byteset" and n:
        for _ in range(int(rng.integers(1, 7))):
            b[pos()] = int(rng.integers(256))
    elif kind == "field32" and n >= 4:
        i = int(rng.integers(0, n - 3)) & ~3 if rng.random() < 0.5 else int(rng.integers(0, n - 3))
        v = int(rng.choice([0, 1, 2**31 - 1, 2**32 - 1, int(rng.integers(0, 2**32))]))
        b[i : i + 4] = v.to_bytes(4, "little")
    elif kind == "truncate":
        b = b[: pos()]
    elif kind == "append":
        b += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == "insert":
        i = pos(1)
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    elif kind == "delete" and n:
        i = pos()
        del b[i : i + int(rng.integers(1, 16))]
    elif kind == "duplicate" and n:
        i = pos()
        b[i:i] = b[i : i + int(rng.integers(1, 32))]
    elif kind == "zero" and n:
        i = pos()
        k = int(rng.integers(1, 32))
        b[i : i + k] = bytes(len(b[i : i + k]))
    elif kind == "garbage":
        b = bytearray(rng.integers(0, 256, int(rng.integers(0, 2 * n + 8)), dtype=np.uint8).tobytes())
    return bytes(b)


def _with_crc(body: bytes) -> bytes:
    return zlib.crc32(body).to_bytes(4, "little") + body


def _fix_container_crc(data: bytes) -> bytes:
    body = data[:-4] if len(data) >= 4 else data
    return body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little")


class PayloadTarget:
    """A sampler and one of its payloads on a synthetic latent."""

    def __init__(self, name: str, sampler, d: int, kl_bits: float, seed: int) -> None:
        self.name = f"payload:{name}"
        self.sampler = sampler
        q, self.p = make_pair(d, kl_bits, seed=seed)
        self.key = StreamKey(seed)
        self.body = sampler.encode(q, self.p, self.key).payload[4:]

    def run(self, kind: str, rng: np.random.Generator) -> str:
        out = self.sampler.decode(self.p, self.key, _with_crc(mutate(self.body, kind, rng)))
        if tuple(out.shape) != tuple(self.p.mean.shape) or not bool(torch.isfinite(out).all()):
            return "BAD_OUTPUT"
        return "decoded"


class ContainerTarget:
    """A whole .rbb file of a real (small) model."""

    def __init__(self, codec, pipeline: str, image: np.ndarray) -> None:
        self.name = f"container:{pipeline}"
        self.codec = codec
        self.data = codec.compress(image)
        self.container = bitstream.parse(self.data)
        self.shape = image.shape

    def run(self, kind: str, rng: np.random.Generator) -> str:
        c = self.container
        if rng.random() < 0.5:  # a section payload: reaches the sampler decoders and the network
            i = int(rng.integers(len(c.sections)))
            s = c.sections[i]
            payload = _with_crc(mutate(s.payload[4:], kind, rng))
            sections = list(c.sections)
            sections[i] = bitstream.Section(s.level, s.sampler_id, s.params, s.num_dims, payload)
            data = bitstream.pack(
                bitstream.Container(fingerprint=c.fingerprint, width=c.width, height=c.height, seed=c.seed,
                                    sections=tuple(sections))
            )  # fmt: skip
        else:  # header and framing (magic, sizes, sampler ids and parameters, lengths)
            data = _fix_container_crc(mutate(self.data[:-4], kind, rng) + b"\0\0\0\0")
        rgb = self.codec.decompress(data)
        declared = bitstream.parse(data)
        if rgb.dtype != np.uint8 or rgb.shape != (declared.height, declared.width, 3):
            return "BAD_OUTPUT"
        return "decoded"


def build_targets(containers: bool = True) -> list:
    torch.manual_seed(0)
    targets: list = [
        PayloadTarget("pfr(22,14,64,22)", PFRSampler(22, 14, 64, 22), 3000, 3000, 1),
        PayloadTarget("pfr(8,11,16,8,ch12)", PFRSampler(8, 11, 16, 8, channels=12), 600, 600, 2),
        PayloadTarget("pfr(25,16,64,25)", PFRSampler(25, 16, 64, 25), 2000, 2000, 3),
        PayloadTarget("rejection(6)", RejectionSampler(6), 600, 600, 4),
        PayloadTarget("greedy(4,8,32)", GreedySampler(4, 8, 32), 600, 600, 5),
        PayloadTarget("importance(6,32,6)", ImportanceSampler(6, 32, 6), 600, 600, 6),
        PayloadTarget("pfr(22,14,256,22,ch12)", PFRSampler(22, 14, 256, 22, channels=12), 3000, 3000, 7),
        PayloadTarget("dpfr(8,11,16,8,ch12,all)", DitheredPFRSampler(8, 11, 16, 8, 12, threshold=-100.0), 600, 600, 8),
        PayloadTarget("dpfr(22,14,128,22,ch12)", DitheredPFRSampler(22, 14, 128, 22, 12, threshold=1.0), 3000, 3000, 9),
    ]
    if containers and TINY.exists():
        from raybb.codec import load_codec

        img = np.random.default_rng(7).integers(0, 256, (40, 56, 3), dtype=np.uint8)
        for pipeline in ("pfr-dither", "pfr", "is-gs", "rs"):
            targets.append(ContainerTarget(load_codec(str(TINY), sampler=pipeline), pipeline, img))
    return targets


def run(cases: int, seed: int = 0, case_timeout: float = 10.0, containers: bool = True,
        progress: bool = False) -> dict:  # fmt: skip
    """Run ``cases`` mutated streams spread evenly over targets and mutation kinds; return counts."""
    targets = build_targets(containers)
    rng = np.random.default_rng(seed)
    counts: dict[str, Counter] = defaultdict(Counter)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    examples: list[dict] = []
    worst = {t.name: 0.0 for t in targets}
    old = signal.signal(signal.SIGALRM, _alarm)
    t0 = time.perf_counter()
    try:
        for i in range(cases):
            target = targets[i % len(targets)]
            kind = MUTATIONS[(i // len(targets)) % len(MUTATIONS)]
            case_rng = np.random.default_rng([seed, i])
            ts = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, case_timeout)
            try:
                outcome = target.run(kind, case_rng)
            except _Hang:
                outcome = "HANG"
            except BitstreamError as e:
                outcome = f"raised {type(e).__name__}"
                if "checksum mismatch" in str(e):  # a framing mutation that landed in a payload
                    outcome += " (payload CRC)"
            except Exception as e:  # noqa: BLE001 - exactly what the fuzzer is looking for
                outcome = f"CRASH {type(e).__name__}"
                if len(examples) < 20:
                    examples.append({"case": i, "target": target.name, "mutation": kind, "error": repr(e)[:300]})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            worst[target.name] = max(worst[target.name], time.perf_counter() - ts)
            counts[target.name][outcome] += 1
            by_kind[kind][outcome] += 1
            if progress and (i + 1) % 5000 == 0:
                print(f"{i + 1}/{cases} in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGALRM, old)
    del rng
    failures = sum(n for c in counts.values() for k, n in c.items() if k.split()[0] in FAILURES)
    return {
        "cases": cases,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        "failures": failures,
        "by_target": {k: dict(sorted(v.items())) for k, v in counts.items()},
        "by_mutation": {k: dict(sorted(v.items())) for k, v in by_kind.items()},
        "worst_case_seconds": worst,
        "failure_examples": examples,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _markdown(res: dict, info: dict, command: str) -> str:
    lines = [
        "# Bitstream fuzzing (CRCs recomputed)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {info['cpu']}, {info['cores']} logical CPUs, torch {info['torch']} with 1 thread, "
        f"Python {info['python']}; date {info['date']}.  ",
        f"{res['cases']} mutated streams (seed {res['seed']}) in {res['seconds']:.0f} s; "
        f"peak RSS {res['peak_rss_mib']:.0f} MiB. **Failures (crash, bad output, hang): {res['failures']}.**",
        "",
        "Every stream had its CRCs recomputed after the mutation, so it reached the parsers. `decoded`: the "
        "parser accepted it and returned a finite result of the right shape (a mutation that only changes "
        "which sample is decoded); `raised X`: the typed `BitstreamError` garbage must give; "
        "`(payload CRC)`: a whole-file mutation of a container that landed inside a section payload and was "
        "stopped by that payload's own CRC.",
        "",
        "| target | cases | outcomes | slowest case (s) |",
        "|---|---|---|---|",
    ]
    for name, c in res["by_target"].items():
        outs = ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {name} | {sum(c.values())} | {outs} | {res['worst_case_seconds'][name]:.3f} |")
    lines += ["", "| mutation | outcomes |", "|---|---|"]
    for name, c in res["by_mutation"].items():
        outs = ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {name} | {outs} |")
    if res["failure_examples"]:
        lines += ["", "Failures:", ""] + [f"* `{json.dumps(e)}`" for e in res["failure_examples"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case-timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    ap.add_argument("--no-containers", action="store_true", help="sampler payloads only (no model)")
    ap.add_argument("--stem", default="fuzz_bitstreams")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from raybb.evaluation import machine_info

    mi = machine_info()
    info = {
        "cpu": mi["cpu"],
        "cores": os.cpu_count(),
        "torch": mi["torch"],
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": os.getloadavg(),
    }
    command = "python benchmarks/fuzz_bitstreams.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res = run(a.cases, a.seed, a.case_timeout, containers=not a.no_containers, progress=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.stem}.json").write_text(json.dumps({"machine": info, "command": command, **res}, indent=1))
    (RESULTS / f"{a.stem}.md").write_text(_markdown(res, info, command))
    print(_markdown(res, info, command))
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
