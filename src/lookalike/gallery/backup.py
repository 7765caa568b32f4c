"""A consistent copy of a SQLite gallery taken beside running processes (:func:`backup`): its database through
SQLite's online backup API, its vector files and saved index as they were written for it, then the copy audited as
``gallery verify`` audits. Enrolled and probe photos are not part of it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lookalike.gallery import BUSY_TIMEOUT, display_db, is_postgres_url
from lookalike.gallery.store import NoGalleryError, StoreError, VectorsMismatchError
from lookalike.gallery.vectors import LOCK, copy_vectors, vector_dir
from lookalike.gallery.verify import VerifyReport

PAGES_PER_STEP = 4096  # database pages copied per backup step (16 MB of 4 KB pages), for the progress bar
NOT_COPIED = ("enrolled photos (referenced by path, or kept in the service's --data-dir) are not copied: "
              "`lookalike gallery verify --db {out} --photos` shows whether the copy's are reachable")


@dataclass
class BackupReport:
    """What :func:`backup` copied and what the audit of the copy found; ``ok`` when the copy is intact."""

    gallery: str  # the original, as messages show it
    out: str  # the copy's database
    generation: int  # the copy's generation: the original's when its database was read
    database_bytes: int
    vectors: str  # how the copy's vector files were made: "copied", "rebuilt from the database (why)", "none"
    vector_bytes: int
    seconds: float  # copying (the audit's own time is the verify report's)
    verify: VerifyReport

    @property
    def ok(self) -> bool:
        return self.verify.ok

    def summary(self) -> dict:
        """The report as JSON-ready values, the copy's audit under ``verify``."""
        return {"gallery": self.gallery, "out": self.out, "intact": self.ok, "generation": self.generation,
                "database_bytes": self.database_bytes, "vectors": self.vectors, "vector_bytes": self.vector_bytes,
                "seconds": round(self.seconds, 3), "not_copied": NOT_COPIED.format(out=self.out),
                "verify": self.verify.summary()}

    def format(self) -> list[str]:
        """Lines for people: what was copied, what was not, then the audit's summary lines."""
        return [f"copied {self.gallery} to {self.out} at generation {self.generation} in {self.seconds:.1f} s: "
                f"database {self.database_bytes:,} bytes, vector files {self.vector_bytes:,} bytes ({self.vectors})",
                NOT_COPIED.format(out=self.out), *self.verify.format()]


def backup(db: str | Path, out: str | Path, progress: bool = False) -> BackupReport:
    """Copy the SQLite gallery ``db`` (its database, vector files and saved index) to the new gallery ``out``, beside
    processes using it, and audit the copy (:meth:`~lookalike.gallery.Gallery.verify` without photos).

    The vector files are copied first (under their lock, so never part-way through a write), then the database in
    one read transaction (stepped for the progress bar; writers go on meanwhile in WAL mode, and what they commit
    after it began is not in the copy), so the copy's files are never newer than its database: when an enrolment
    committed in between, the copy's first opening brings them up to date from its database. All of it is made in
    a temporary folder beside ``out`` and moved into place only when complete, the database last: an interrupted
    backup leaves no ``out``. An existing ``out`` (or its vector folder) is refused; a PostgreSQL URL too."""
    from lookalike.gallery import Gallery

    if is_postgres_url(str(db)):
        raise StoreError(f"{display_db(db)}: back up a PostgreSQL gallery with pg_dump (its vector files, with "
                         "&vectors=DIR, are rebuilt from the database when the gallery is opened)")
    db, out = Path(db), Path(out)
    if not db.is_file():
        raise NoGalleryError(f"no gallery at {db} (create one with `lookalike enroll`)")
    if not out.name or out.name in (".", ".."):
        raise ValueError(f"--out {str(out)!r} names no file: give the copy's database file, e.g. backup/G.sqlite")
    if out.resolve().is_relative_to(vector_dir(db).resolve()):
        raise ValueError(f"--out {out} is inside the gallery's own vector folder {vector_dir(db)}: put the copy "
                         "elsewhere")
    _check_new(out)
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".backup"))
    moved = False
    try:
        staged = staging / out.name
        copy_vectors(vector_dir(db), vector_dir(staged))  # first: never newer than the database copied after them
        generation = _copy_database(db, staged, progress)
        vectors = _bring_up_to_date(staged)
        database_bytes = staged.stat().st_size
        vector_bytes = sum(p.stat().st_size for p in vector_dir(staged).rglob("*") if p.is_file())
        _check_new(out)
        os.rename(vector_dir(staged), vector_dir(out))
        moved = True
        os.rename(staged, out)  # last: a database at ``out`` is a complete copy
    except BaseException:
        if moved and not os.path.lexists(out):
            shutil.rmtree(vector_dir(out), ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - t0
    with Gallery.open_for_verify(out) as g:
        report = g.verify(progress=progress)
    return BackupReport(display_db(db), str(out), generation, database_bytes, vectors, vector_bytes, seconds, report)


def _check_new(out: Path) -> None:
    """A one-line error when ``out`` or its vector folder exists (a backup never overwrites)."""
    for path in (out, vector_dir(out)):
        if os.path.lexists(path):
            raise ValueError(f"{path} exists: a backup never replaces anything; choose another --out, or remove it "
                             f"first (`rm -r {out} {vector_dir(out)}`)")


def _bring_up_to_date(db: Path) -> str:
    """Open the copy ``db`` as any process does, bringing its vector files up to date and building a missing index;
    how its vector files were made. Files that disagree with the database (the original's did) are rebuilt from it;
    a gallery that cannot be opened is left as copied, for the audit to report."""
    from lookalike.gallery import Gallery

    try:
        try:
            with Gallery.open(db) as g:
                source = g.vectors_source_
        except VectorsMismatchError as e:
            with Gallery.rebuild_vectors(db):
                source = f"store (vector files rebuilt: the original's disagree with its database: {e})"
    except ValueError as e:  # StoreError, a vector that cannot be indexed: the audit lists what is wrong
        return f"as the original's, not brought up to date: the copy cannot be opened: {' '.join(str(e).split())}"
    if not any(p.name != LOCK for p in vector_dir(db).iterdir()):
        return "none: the gallery is empty"
    return "copied" if source == "file" else source.replace("store (vector files ", "").rstrip(")")


def _copy_database(db: Path, to: Path, progress: bool) -> int:
    """SQLite's online backup of ``db`` into the new file ``to``, within one read transaction on ``db``: one
    consistent state (a write committed meanwhile would otherwise restart the copy), writers not blocked in WAL
    mode (a gallery's journal mode); the generation copied."""
    source = sqlite3.connect(str(db), timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        try:
            source.execute("BEGIN")
            generation = source.execute("SELECT generation FROM state").fetchone()  # the read transaction starts
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{db} is not a usable gallery database ({e})") from e
        if generation is None:
            raise StoreError(f"{db} holds no lookalike gallery")
        target = sqlite3.connect(str(to), isolation_level=None)
        try:
            with tqdm(desc="backup: database", unit="page", disable=not progress, leave=False) as bar:
                def step(status: int, remaining: int, total: int) -> None:
                    bar.total = total
                    bar.n = total - remaining
                    bar.refresh()
                source.backup(target, pages=PAGES_PER_STEP, progress=step)
        finally:
            target.close()
        source.execute("COMMIT")
    finally:
        source.close()
    return int(generation[0])
