"""Fast tests of the pure parts: ids, the sampler, the sample cache, the CSV index scanner."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.storage.local import LocalStorage
from services.data.csv_index import build_csv_index
from services.data.ids import validate_dataset_id
from services.data.sampling import SampleCache, SplitMix64, sample_indices
from services.data.servicer import BATCH_BYTES_LIMIT, _split_to_fit


@pytest.mark.parametrize("good", ["policies", "a", "x.y_z-1", "A9"])
def test_valid_ids(good: str) -> None:
    assert validate_dataset_id(good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("../etc", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:evil", "absolute"),
        ("a/b", "separators"),
        ("a\\b", "separators"),
        ("..", "'..'"),
        (".hidden", "letters"),
        ("", "empty"),
        ("x" * 200, "at most"),
        ("sp ace", "letters"),
    ],
)
def test_invalid_ids(bad: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        validate_dataset_id(bad)


def test_splitmix64_known_values() -> None:
    # SplitMix64 reference stream for state 0 (seed ^ domain chosen to give state 0)
    from services.data.sampling import SAMPLE_DOMAIN

    rng = SplitMix64(SAMPLE_DOMAIN)
    assert [rng.next() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_sample_is_distinct_deterministic_and_in_range() -> None:
    a = sample_indices(1000, 200, 5)
    assert len(set(a.tolist())) == 200
    assert a.min() >= 0 and a.max() < 1000
    assert (a == sample_indices(1000, 200, 5)).all()
    assert not (a == sample_indices(1000, 200, 6)).all()
    assert sorted(sample_indices(50, 50, 1).tolist()) == list(range(50))


def test_sample_is_uniform() -> None:
    # every row of 10 is equally likely to be chosen, and to be chosen first
    chosen: Counter[int] = Counter()
    first: Counter[int] = Counter()
    trials = 4000
    for seed in range(trials):
        s = sample_indices(10, 3, seed).tolist()
        chosen.update(s)
        first[s[0]] += 1
    for row in range(10):
        assert abs(chosen[row] / trials - 0.3) < 0.04
        assert abs(first[row] / trials - 0.1) < 0.025


def test_sample_rejects_bad_n() -> None:
    with pytest.raises(ValueError, match="n must be"):
        sample_indices(5, 6, 0)


def test_sample_cache_expires_and_bounds_bytes() -> None:
    now = [0.0]
    cache = SampleCache(ttl=300, max_bytes=10, clock=lambda: now[0])
    cache.put("a", b"12345")
    assert cache.get("a") == b"12345"
    now[0] = 299.0
    assert cache.get("a") == b"12345"
    now[0] = 301.0
    assert cache.get("a") is None
    cache.put("b", b"123456")
    cache.put("c", b"123456")  # evicts b: over 10 bytes
    assert cache.get("b") is None and cache.get("c") == b"123456"


async def _index(tmp_path: Path, content: bytes, k: int = 2):  # type: ignore[no-untyped-def]
    (tmp_path / "t.csv").write_bytes(content)
    storage = LocalStorage(tmp_path)
    info = await storage.stat("t.csv")
    assert info is not None
    return await build_csv_index(storage, info, checkpoint_rows=k)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "rows", "offsets"),
    [
        (b"a,b\n1,2\n3,4\n5,6\n", 3, [4, 12, 16]),
        (b"a,b\n1,2\n3,4\n5,6", 3, [4, 12, 15]),
        (b"a,b\r\n1,2\r\n3,4\r\n", 2, [5, 15]),
        (b"a,b\n1,2\n3,4\n\n\n", 2, [4, 12]),
        (b"a,b\n", 0, [4, 4]),
        (b"a,b", 0, [3, 3]),
    ],
)
async def test_csv_index_rows_and_offsets(tmp_path: Path, content: bytes, rows: int, offsets: list[int]) -> None:
    index = await _index(tmp_path, content)
    assert index.rows == rows
    assert index.offsets is not None and index.offsets.tolist() == offsets
    assert index.sha256 is not None and len(index.sha256) == 64


@pytest.mark.anyio
async def test_csv_index_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import services.data.csv_index as mod

    monkeypatch.setattr(mod, "READ_CHUNK", 7)  # line breaks and \r\n split between reads
    body = b"".join(f"{i},x{i}\r\n".encode() for i in range(100))
    index = await _index(tmp_path, b"id,name\r\n" + body, k=10)
    assert index.rows == 100
    assert index.offsets is not None and len(index.offsets) == 11
    data = (tmp_path / "t.csv").read_bytes()
    for j, off in enumerate(index.offsets[:-1].tolist()):
        assert data[off:].startswith(f"{j * 10},".encode())


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "empty"),
        (b"a,b\n1,2\n\n3,4\n", "row 1 is an empty line"),
        (b'a,b\n1,"x\ny"\n', "quoted field holds a line break"),
        (b"a,a\n1,2\n", "repeats a column"),
        (b"\xff\xfe,b\n1,2\n", "not UTF-8"),
    ],
)
async def test_csv_index_refuses(tmp_path: Path, content: bytes, error: str) -> None:
    with pytest.raises(FailedPrecondition, match=error):
        await _index(tmp_path, content)


@pytest.mark.parametrize("rows", [0, 1, 1000, 100_000])
def test_readrows_batches_cover_the_rows_in_order_each_under_the_limit(rows: int) -> None:
    table = pa.table({"id": np.arange(rows, dtype=np.int64), "x": np.ones(rows), "text": ["abcdefgh" * 8] * rows})
    pieces = _split_to_fit(table)
    assert [o for o, _, _ in pieces] == list(np.cumsum([0] + [n for _, n, _ in pieces])[:-1])
    assert sum(n for _, n, _ in pieces) == rows
    read = [pa.ipc.open_stream(p).read_all() for _, _, p in pieces]
    assert all(len(p) <= BATCH_BYTES_LIMIT for _, _, p in pieces)
    assert pa.concat_tables(read).equals(table)
    if table.nbytes > BATCH_BYTES_LIMIT:
        # sized from the Arrow bytes: no piece is far below the limit (none serialized and halved)
        assert len(pieces) == -(-table.nbytes * 9 // (8 * BATCH_BYTES_LIMIT))
