"""The Zowe caching service's VSAM layout (ksds.zowe), against the reference's test vectors (VsamKeyTest,
VsamRecordTest: keyLength 30, recordLength 512, IBM-1047) and the cp1047 codec."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

import ksds
from ksds import zowe

KL, RL = 30, 512


def test_java_string_hash_vectors() -> None:
    assert zowe.java_string_hash("Service") == -646160747
    assert zowe.java_string_hash("key") == 106079
    assert zowe.java_string_hash("") == 0
    assert zowe.java_string_hash("a") == 97
    # overflow wraps as Java int arithmetic does
    assert zowe.java_string_hash("polygenelubricants") == -2147483648
    # UTF-16 code units: a character outside the BMP counts as its surrogate pair
    assert zowe.java_string_hash("\U0001f600") == 31 * 0xD83D + 0xDE00


def test_key_layout() -> None:
    text = zowe.key_text("Service", "key", KL)
    assert text == "-646160747:106079".ljust(30)
    key = zowe.vsam_key("Service", "key", key_length=KL)
    assert len(key) == KL
    assert key == text.encode("cp1047")
    assert key[0] == 0x60 and key[10] == 0x7A and key[17:] == b"\x40" * 13  # '-', ':', spaces in EBCDIC
    sid_only = zowe.service_key("Service", key_length=KL)
    assert sid_only.decode("cp1047").rstrip() == "-646160747" and b"\x7a" not in sid_only
    assert key.startswith(sid_only.rstrip(b"\x40"))


def test_key_length_minimum() -> None:
    assert len(zowe.vsam_key("s", "k", key_length=23)) == 23
    with pytest.raises(zowe.ZoweLayoutError):
        zowe.vsam_key("s", "k", key_length=22)


def test_ebcdic_key_order_puts_a_service_prefix_first() -> None:
    # space X'40' < '-' X'60' < ':' X'7A' < digits X'F0'..: the sid-only key sorts before its service's keys
    order = [" ", "-", ":", "0", "9"]
    assert sorted(order, key=lambda c: c.encode("cp1047")) == order
    sid_only = zowe.service_key("Service", key_length=KL)
    assert sid_only < zowe.vsam_key("Service", "key", key_length=KL)


def test_record_encoding_vector() -> None:
    kv = zowe.KeyValue("key", "value", "", "1700000000000")
    data = zowe.encode_record("Service", kv, key_length=KL, record_length=RL)
    assert len(data) == RL
    text = data.decode("cp1047")
    assert text.startswith(zowe.key_text("Service", "key", KL))
    assert str(zowe.java_string_hash("Service")) in text and str(zowe.java_string_hash("key")) in text
    assert '{"key":"key","value":"value","created":"1700000000000"}' in text
    assert text == (zowe.key_text("Service", "key", KL) + zowe.to_json(kv)).ljust(RL)
    assert data.endswith(b"\x40")


def test_json_is_what_jackson_writes() -> None:
    kv = zowe.KeyValue('a"b\\c', "line\nnext\ttab\x01", "svc", "1")
    assert zowe.to_json(kv) == '{"key":"a\\"b\\\\c","value":"line\\nnext\\ttab\\u0001","serviceId":"svc","created":"1"}'
    assert zowe.to_json(zowe.KeyValue("k", "")) == '{"key":"k"}'  # NON_EMPTY leaves out "" and null
    assert zowe.to_json(zowe.KeyValue("é/ü", "v")) == '{"key":"é/ü","value":"v"}'  # no escaping of non-ASCII, '/'


def test_record_parse_vector() -> None:
    data = ('-646160747:106079             {"key":"daisy","value":"flower"}'.ljust(RL)).encode("cp1047")
    rec = zowe.decode(data, key_length=KL)
    assert rec.entry.key == "daisy" and rec.entry.value == "flower"
    assert rec.entry.service_id == "" and rec.entry.created is None
    assert rec.key_text == "-646160747:106079"
    assert (rec.service_hash, rec.key_hash) == (-646160747, 106079)
    assert not rec.consistent  # "daisy" does not hash to 106079 ("key" does)


def test_record_parse_rejects_bad_json() -> None:
    data = ("-646160747:106079             {tank}".ljust(RL)).encode("cp1047")
    with pytest.raises(zowe.ZoweLayoutError):
        zowe.decode_record(data, key_length=KL)
    with pytest.raises(zowe.ZoweLayoutError):
        zowe.decode_record(("x".ljust(KL) + "[1, 2]").encode("cp1047"), key_length=KL)


def test_round_trip_and_consistency() -> None:
    kv = zowe.KeyValue("my key [1]", "a value ^ with ¬ and ¨", "gateway", "1712345678901")
    data = zowe.encode_record("gateway", kv, key_length=KL, record_length=RL)
    rec = zowe.decode(data, key_length=KL)
    assert rec.entry == kv
    assert rec.consistent


def test_payload_too_large() -> None:
    long_value = "Lorem ipsum " * 60
    with pytest.raises(zowe.PayloadTooLargeError):
        zowe.encode_record("Service", zowe.KeyValue("key", long_value), key_length=KL, record_length=RL)
    with pytest.raises(zowe.PayloadTooLargeError):
        zowe.encode_record("Service", zowe.KeyValue(long_value, "value"), key_length=KL, record_length=RL)


def test_unmappable_characters_become_question_marks_as_in_java() -> None:
    data = zowe.encode_record("s", zowe.KeyValue("k", "snow ☃"), key_length=KL, record_length=RL)
    assert zowe.decode(data, key_length=KL).entry.value == "snow ?"
    with pytest.raises(UnicodeEncodeError):
        zowe.encode_record("s", zowe.KeyValue("k", "snow ☃"), key_length=KL, record_length=RL, errors="strict")


def test_cp1047_codec() -> None:
    for name in ("cp1047", "IBM-1047", "ibm1047", "1047"):
        assert codecs.lookup(name).name == "cp1047"
    # the six code points IBM-1047 places differently from IBM-037
    expected = {"[": 0xAD, "]": 0xBD, "^": 0x5F, "¬": 0xB0, "Ý": 0xBA, "¨": 0xBB}
    for ch, b in expected.items():
        assert ch.encode("cp1047") == bytes([b])
        assert ch.encode("cp037") != bytes([b])
    every = bytes(range(256))
    assert every.decode("cp1047").encode("cp1047") == every
    diff = [b for b in range(256) if bytes([b]).decode("cp1047") != bytes([b]).decode("cp037")]
    assert sorted(diff) == sorted(expected.values())
    assert "Hello, World 0123".encode("cp1047") == "Hello, World 0123".encode("cp037")
    # incremental and stream forms work too
    assert codecs.getincrementaldecoder("cp1047")().decode(b"\xad\xbd") == "[]"


def test_records_in_a_data_set(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.ksds")
    ksds.define(path, key_length=KL, record_length=RL, ci_size=4096)
    entries = [zowe.KeyValue(f"key{i}", f"value {i}", "svc", str(1700000000000 + i)) for i in range(50)]
    with ksds.open(path) as ds:
        for kv in entries:
            ds.write(zowe.encode_record("svc", kv, key_length=KL, record_length=RL))
        got = {zowe.decode(r, key_length=KL).entry for r in ds}
        # readForService: KEY_GE on the sid-only key, then every record that starts with the sid hash
        start = zowe.service_key("svc", key_length=KL)
        prefix = str(zowe.java_string_hash("svc")).encode("cp1047")
        scanned = [r for r in ds.browse(start, gteq=True) if r.startswith(prefix)]
    assert got == set(entries)
    assert len(scanned) == 50
