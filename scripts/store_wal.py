#!/usr/bin/env python3
"""Where a running store's disk writes go: the commits in its WAL, page by page.

    python scripts/store_wal.py STATE_DIR_OR_DB [--wait SECONDS]

Copies the database and its -wal (optionally after --wait seconds, e.g. into a bench_daemon.py window; the daemon
keeps running), then reads the WAL frames since the last checkpoint: each frame is one 4 KiB page image, a frame
with a database size in its header ends a commit. Every page is named by the b-tree that holds it (``dbstat`` of
the copy), or as a pointer-map page (auto_vacuum) or a freelist page. Prints frames per commit by kind of commit
(a group commit of readings, a sink's cursor, other), and which b-trees' pages a readings commit writes: what the
WAL costs per reading before the checkpoint writes each distinct page once more into the database file.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path

WAL_HEADER, FRAME_HEADER = 32, 24


def frames(wal: bytes) -> list[list[int]]:
    """The committed transactions of the current WAL generation, each as the list of page numbers it wrote."""
    if len(wal) < WAL_HEADER:
        return []
    page_size = struct.unpack(">I", wal[8:12])[0]
    salt = wal[16:24]
    commits: list[list[int]] = []
    current: list[int] = []
    off = WAL_HEADER
    while off + FRAME_HEADER + page_size <= len(wal):
        pgno, size_after = struct.unpack(">II", wal[off:off + 8])
        if wal[off + 8:off + 16] != salt:  # a frame of an older generation: the end of this one
            break
        current.append(pgno)
        if size_after:
            commits.append(current)
            current = []
        off += FRAME_HEADER + page_size
    return commits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--wait", type=float, default=0.0)
    a = ap.parse_args()
    p = Path(a.path)
    db = p / "pollerd.db" if p.is_dir() else p
    time.sleep(a.wait)
    tmp = Path(tempfile.mkdtemp(prefix="store-wal-"))
    # The WAL first: frames appended between the two copies are not in the copied WAL, so every page named
    # there exists in the copied database (it only grows between checkpoints).
    shutil.copy(f"{db}-wal", tmp / "c.db-wal")
    shutil.copy(db, tmp / "c.db")
    wal = (tmp / "c.db-wal").read_bytes()
    commits = frames(wal)
    c = sqlite3.connect(tmp / "c.db")
    owner = {int(pg): str(name) for pg, name in c.execute("SELECT pageno, name FROM dbstat")}
    page_size = c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    shutil.rmtree(tmp)

    def name(pg: int) -> str:
        if pg == 1:
            return "page 1 (header, schema)"
        if pg in owner:
            return owner[pg]
        return "pointer map / freelist"

    kinds: dict[str, list[list[int]]] = collections.defaultdict(list)
    for pages in commits:
        names = {name(pg) for pg in pages}
        kind = ("readings" if "samples" in names or "readings" in names else
                "sink cursor" if names & {"sink_cursors", "event_cursors"} else "other")
        kinds[kind].append(pages)
    print(f"{db}: {len(commits)} commits in the WAL since its last checkpoint, {sum(map(len, commits))} frames "
          f"of {page_size + FRAME_HEADER} B")
    for kind, group in sorted(kinds.items()):
        n = sum(map(len, group))
        print(f"  {kind:12s} {len(group):5d} commits, {n / len(group):5.1f} frames each")
    group = kinds.get("readings", [])
    if group:
        per: collections.Counter[str] = collections.Counter()
        for pages in group:
            per.update(name(pg) for pg in pages)
        print("  pages a readings commit writes, by b-tree (mean per commit):")
        for nm, k in per.most_common():
            print(f"    {nm:28s} {k / len(group):6.2f}")
        distinct = len({pg for pages in commits for pg in pages})
        print(f"  distinct pages in these commits (what the checkpoint writes once): {distinct}")


if __name__ == "__main__":
    sys.exit(main())
