"""Lost writes: an older image of a CI written back over the newer one (a write the disk lost or put elsewhere, or
one file of a data set restored from an older copy) passes its CRC; the stamp its index entry keeps catches it.

For several definitions, a data set goes through checkpoints; a copy of the file is taken half way. Then, one at a
time, the old image of a CI that has changed since (a data CI, a sequence-set CI, an index-set CI, the top CI) is
written back: EXAMINE must report that CI, and reading the data set must raise DamagedCIError naming it. Every
injection must be caught.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

import ksds
from ksds.ci import Codec, DataCI, IndexCI
from ksds.format import HEADER_SIZE, decode_header

DEFINITIONS = [
    dict(key_length=8, record_length=100, ci_size=512, cis_per_ca=4),
    dict(key_length=30, record_length=120, ci_size=512, cis_per_ca=3),  # few entries per index CI: 3+ levels
    dict(key_length=4, key_offset=6, record_length=64, ci_size=1024, cis_per_ca=8),
]


def key(d: dict, n: int) -> bytes:
    return (b"%0" + str(d["key_length"]).encode() + b"d") % n


def record(d: dict, n: int, v: int) -> bytes:
    off = d.get("key_offset", 0)
    k = key(d, n)
    return bytes([v]) * off + k + bytes([v]) * (d["record_length"] - off - len(k))


def tree_cis(path: str) -> dict[int, str]:
    """CI number -> kind, for every CI the index points at (from a clean file)."""
    with open(path, "rb") as f:
        data = f.read()
    defn, _, state = decode_header(data[:HEADER_SIZE], path)
    codec = Codec(defn, path)
    cisz = defn.ci_size
    out: dict[int, str] = {}

    def walk(ci: int) -> None:
        obj = codec.decode(data[ci * cisz : (ci + 1) * cisz], ci)
        if isinstance(obj, IndexCI):
            out[ci] = "top" if ci == state.root else ("sequence set" if obj.level == 1 else "index set")
            for p in obj.ptrs:
                walk(p)
        elif isinstance(obj, DataCI):
            out[ci] = "data"

    walk(state.root)
    return out


@pytest.mark.parametrize("d", DEFINITIONS, ids=["k8", "k30-levels", "k4-off6"])
def test_every_stale_image_is_caught(tmp_path: Path, d: dict) -> None:
    rnd = random.Random(7)
    path = str(tmp_path / "lw.ksds")
    ksds.define(path, **d)
    live: dict[int, int] = {}
    with ksds.open(path) as ds:
        for round_ in range(6):
            for _ in range(400):
                n = rnd.randrange(3000)
                if n in live and rnd.random() < 0.3:
                    ds.erase(key(d, n))
                    del live[n]
                else:
                    live[n] = rnd.randrange(256)
                    ds.put(record(d, n, live[n]))
            ds.checkpoint()
            if round_ == 2:
                shutil.copyfile(path, tmp_path / "old")  # the file as a checkpoint left it
        assert ds.stats()["LEVELS"] >= 2
    assert ksds.examine(path).sound
    cisz = d["ci_size"]
    old = (tmp_path / "old").read_bytes()
    new = Path(path).read_bytes()
    kinds = tree_cis(path)
    def image(data: bytes, ci: int) -> bytes:
        return data[ci * cisz : (ci + 1) * cisz]

    changed = [ci for ci in kinds if (ci + 1) * cisz <= len(old) and image(old, ci) != image(new, ci)]
    assert {kinds[ci] for ci in changed} >= {"data", "sequence set", "top"}
    victims = rnd.sample(changed, min(25, len(changed)))
    caught = 0
    for ci in victims:
        stale = old[ci * cisz : (ci + 1) * cisz]
        with open(path, "r+b") as f:
            f.seek(ci * cisz)
            f.write(stale)
        report = ksds.examine(path)
        assert not report.sound, f"EXAMINE missed the old image of {kinds[ci]} CI {ci}"
        assert any(f.ci == ci for f in report.findings), (ci, [str(f) for f in report.findings])
        for space in (32 << 20, 1):  # 1: the pool is full at once, so index CIs are searched in place too
            with ksds.open(path, "r", buffer_space=space) as ds:
                with pytest.raises(ksds.DamagedCIError) as e:
                    for n in sorted(live):  # keyed reads: every CI on every path is read from the file
                        ds.read(key(d, n))
                assert e.value.ci == ci, str(e.value)
        if kinds[ci] == "data":
            for backward in (False, True):  # browses read data CIs in place: the same check
                with ksds.open(path, "r") as ds, pytest.raises(ksds.DamagedCIError) as e:
                    for _ in ds.browse(backward=backward):
                        pass
                assert e.value.ci == ci, str(e.value)
        with open(path, "r+b") as f:  # put the right image back for the next one
            f.seek(ci * cisz)
            f.write(new[ci * cisz : (ci + 1) * cisz])
        caught += 1
    assert caught == len(victims) > 10
    assert ksds.examine(path).sound
    with ksds.open(path) as ds:
        assert {ds.key_of(r) for r in ds} == {key(d, n) for n in live}


def test_the_stamp_check_names_the_ci(tmp_path: Path) -> None:
    d = DEFINITIONS[0]
    path = str(tmp_path / "one.ksds")
    ksds.define(path, **d)
    with ksds.open(path) as ds:
        for n in range(200):
            ds.write(record(d, n, 1))
        ds.checkpoint()
        shutil.copyfile(path, tmp_path / "old")
        for n in range(200):
            ds.rewrite(record(d, n, 2))
    old = (tmp_path / "old").read_bytes()
    new = Path(path).read_bytes()
    cisz = d["ci_size"]
    ci = next(
        c for c, kind in tree_cis(path).items()
        if kind == "data" and old[c * cisz : (c + 1) * cisz] != new[c * cisz : (c + 1) * cisz]
    )
    fd = os.open(path, os.O_RDWR)
    os.pwrite(fd, old[ci * cisz : (ci + 1) * cisz], ci * cisz)
    os.close(fd)
    with ksds.open(path, "r") as ds:
        want = rf"CI {ci} \(RBA {ci * cisz}\) holds an older image than its index expects"
        with pytest.raises(ksds.DamagedCIError, match=want):
            list(ds)
