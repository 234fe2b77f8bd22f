"""The keyed read's hot path (btree.find) against a dict, over record layouts that take each of its branches: small
CIs whose keys are unpacked at once, large ones searched in place, keys at the start, middle and end of a record,
CIs pooled, dirty in a batch, and read through the file's map."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ksds
from ksds.ci import KEYS_AT_ONCE

LAYOUTS = [
    # (key_length, key_offset, record_length, ci_size)
    (8, 0, 40, 512),  # 11 records per CI: keys unpacked at once
    (8, 32, 40, 512),  # the key ends the record
    (4, 10, 30, 8192),  # 272 records per CI: binary search in place
    (16, 3, 64, 4096),  # 63 per CI
    (64, 0, 512, 4096),  # the benchmark's
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_find_agrees_with_a_dict(tmp_path, layout) -> None:
    kl, ko, rl, cisz = layout
    path = str(tmp_path / "f.ksds")
    ksds.define(path, key_length=kl, key_offset=ko, record_length=rl, ci_size=cisz)
    rng = random.Random(kl * 1000 + ko)
    model: dict[bytes, bytes] = {}

    def make(k: int) -> tuple[bytes, bytes]:
        key = k.to_bytes(kl, "big")
        body = bytearray(rng.randbytes(rl))
        body[ko : ko + kl] = key
        return key, bytes(body)

    space = 4000
    with ksds.open(path, "rw") as ds:
        with ds.batch():
            for k in rng.sample(range(0, space, 2), 1200):
                key, rec = make(k)
                ds.write(rec)
                model[key] = rec
        with ds.batch():  # reads of dirty CIs inside a batch
            for k in rng.sample(range(1, space, 2), 200):
                key, rec = make(k)
                ds.write(rec)
                model[key] = rec
            for k in range(space):
                key = k.to_bytes(kl, "big")
                assert ds.get(key) == model.get(key)
        for k in range(space):  # pooled and dirty-then-committed CIs
            key = k.to_bytes(kl, "big")
            assert ds.get(key) == model.get(key)
    with ksds.open(path, "r", buffer_space=64 << 10) as ds:  # through the map, with a small pool
        for _ in range(2):
            for k in rng.sample(range(space), space):
                key = k.to_bytes(kl, "big")
                assert ds.get(key) == model.get(key)
                if key in model:
                    assert ds.read(key) == model[key]
        if cisz // rl <= KEYS_AT_ONCE:
            assert ds.stats()["LEVELS"] >= 2


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_find_in_small_data_sets(tmp_path_factory, data) -> None:
    path = str(tmp_path_factory.mktemp("f") / "f.ksds")
    kl = data.draw(st.integers(1, 6))
    ko = data.draw(st.integers(0, 6))
    rl = data.draw(st.integers(ko + kl, ko + kl + 20))
    ksds.define(path, key_length=kl, key_offset=ko, record_length=rl, ci_size=512)
    keys = data.draw(st.sets(st.binary(min_size=kl, max_size=kl), max_size=80))
    probes = data.draw(st.lists(st.binary(min_size=kl, max_size=kl), max_size=40))
    with ksds.open(path, "rw") as ds:
        for key in keys:
            ds.write(bytes(ko) + key + bytes(rl - ko - kl))
    with ksds.open(path, "r") as ds:
        for key in list(keys) + probes:
            got = ds.get(key)
            assert got == (bytes(ko) + key + bytes(rl - ko - kl) if key in keys else None)
