"""The bitstream fuzz harness (benchmarks/fuzz_bitstreams.py): mutated streams with recomputed CRCs
must give a typed BitstreamError or a well-formed result, never a crash, bad output or hang."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import fuzz_bitstreams  # noqa: E402


def _check(res: dict, cases: int) -> None:
    assert res["failures"] == 0, res["failure_examples"]
    assert sum(sum(c.values()) for c in res["by_target"].values()) == cases
    outcomes = {k.removesuffix(" (payload CRC)") for c in res["by_target"].values() for k in c}
    assert outcomes <= {"decoded"} | {
        f"raised {n}"
        for n in (
            "BadMagic",
            "UnsupportedVersion",
            "ChecksumMismatch",
            "TruncatedBitstream",
            "ModelMismatch",
            "CorruptPayload",
        )
    }
    # the CRCs were recomputed: the parsers, not the checksums, rejected the streams
    assert not any("ChecksumMismatch" in k for k in outcomes)
    for name, c in res["by_target"].items():
        stopped_by_crc = sum(n for k, n in c.items() if k.endswith("(payload CRC)"))
        assert stopped_by_crc == 0 if name.startswith("payload:") else stopped_by_crc < sum(c.values()) / 2
    assert any(t.startswith("container:") for t in res["by_target"]) and len(res["by_target"]) >= 9


def test_fuzz_harness_small():
    _check(fuzz_bitstreams.run(450, seed=1), 450)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_harness_100k():
    _check(fuzz_bitstreams.run(100_000, seed=2), 100_000)
