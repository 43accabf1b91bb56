"""Dataset versions on local storage: cheap for hand-placed Parquet, content hashes otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.common.storage.base import CountingStorage
from services.common.storage.local import LocalStorage
from services.data.catalog import Catalog

pytestmark = pytest.mark.anyio


def write(path: Path, ids: list[int]) -> None:
    pq.write_table(pa.table({"policy_id": pa.array(ids, pa.int64())}), path)


async def test_hand_placed_parquet_version_tracks_the_file(tmp_path: Path) -> None:
    write(tmp_path / "p.parquet", list(range(1000)))
    storage = CountingStorage(LocalStorage(tmp_path))
    first = (await Catalog(storage).get("p")).version
    assert first.startswith("etag:")
    assert (await Catalog(storage).get("p")).version == first  # stable across processes

    write(tmp_path / "p.parquet", [*range(999), 5000])  # same shape, other content
    changed = (await Catalog(storage).get("p")).version
    assert changed.startswith("etag:") and changed != first


async def test_csv_version_is_the_content_hash(tmp_path: Path) -> None:
    import hashlib

    body = b"policy_id,age_at_entry\n1,30\n2,40\n"
    (tmp_path / "c.csv").write_bytes(body)
    entry = await Catalog(LocalStorage(tmp_path)).get("c")
    assert entry.version == "sha256:" + hashlib.sha256(body).hexdigest()
    # touching the file without changing it keeps the version: it is the content's
    os.utime(tmp_path / "c.csv", ns=(1, 1))
    assert (await Catalog(LocalStorage(tmp_path)).get("c")).version == entry.version
