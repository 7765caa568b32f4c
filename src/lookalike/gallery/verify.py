"""An integrity audit of a persistent gallery (:meth:`lookalike.gallery.Gallery.verify`): what was checked, and each
problem found with its remedy. Nothing here writes to the gallery."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from lookalike.gallery.store import GalleryStore, ImageRecord
from lookalike.matchers.cache import content_key
from lookalike.summary import counted

PHOTO_KINDS = ("photo_missing", "photo_unreadable", "photo_changed")


@dataclass
class VerifyReport:
    """What :meth:`~lookalike.gallery.Gallery.verify` checked and found; ``ok`` when nothing was wrong."""

    gallery: str  # the database as messages show it (a PostgreSQL URL without its password)
    generation: int = -1  # the database's generation when the check began
    vectors: str = ""  # the vectors searched: the vector files' folder, or "memory" (read from the database)
    faces: int = 0  # rows of the searched vectors compared with the database's embeddings
    index: str = ""  # the saved approximate index: "matches", "none saved", "exact (none saved)", "does not match"
    photos: int | None = None  # enrolled photos re-read and hashed (None: not asked)
    photos_absent: int = 0  # faces with no photo to re-read (added as vectors, Gallery.add_embeddings)
    problems: list[dict] = field(default_factory=list)  # kind, message; image_id, subject, path when about one image
    remedies: dict[str, str] = field(default_factory=dict)  # kind -> what to do about it
    changed: bool = False  # the database changed while it was checked: a problem may be that change; run it again
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, kind: str, message: str, remedy: str, **about) -> None:
        self.problems.append({"kind": kind, **about, "message": message})
        self.remedies.setdefault(kind, remedy)

    def counts(self) -> dict[str, int]:
        """Problems by kind."""
        return dict(sorted(Counter(p["kind"] for p in self.problems).items()))

    def summary(self) -> dict:
        """The report as JSON-ready values (``problems`` listed in full)."""
        return {"gallery": self.gallery, "intact": self.ok, "generation": self.generation, "faces": self.faces,
                "vectors": self.vectors, "index": self.index, "photos": self.photos,
                "photos_absent": self.photos_absent, "problems_by_kind": self.counts(),
                "changed_during_check": self.changed, "seconds": round(self.seconds, 3), "remedies": self.remedies,
                "problems": self.problems}

    def format(self) -> list[str]:
        """Summary lines for people (the problems themselves are listed by the caller)."""
        lines = [f"{self.gallery} at generation {self.generation}: {counted(self.faces, 'face')} compared with the "
                 f"database's embeddings (vectors: {self.vectors}); saved index: {self.index}"]
        if self.photos is not None:
            kinds = self.counts()
            absent = f"; {self.photos_absent} faces have no photo (added as vectors)" if self.photos_absent else ""
            lines.append(f"photos: {self.photos} re-read, " + ", ".join(
                f"{kinds.get(k, 0)} {k.removeprefix('photo_')}" for k in PHOTO_KINDS) + absent)
        if self.changed:
            lines.append("the gallery changed while it was checked: run verify again to tell a change from damage")
        if self.ok:
            lines.append("intact: no problems found")
        else:
            lines.append(f"NOT intact: {counted(len(self.problems), 'problem')} ("
                         + ", ".join(f"{k} {n}" for k, n in self.counts().items()) + ")")
        return lines


def photo_problem(record: ImageRecord) -> tuple[str, str] | None:
    """(kind, message) when an enrolled image's file is missing, unreadable or no longer the bytes enrolled (its
    SHA-1, read in blocks); None when it is intact."""
    key = content_key(record.path)
    if key == record.sha1:
        return None
    if not key.startswith("missing:"):
        return "photo_changed", f"{record.path}: the file has changed since it was enrolled"
    if not os.path.lexists(record.path):
        return "photo_missing", f"{record.path}: the file is gone"
    return "photo_unreadable", f"{record.path}: the file cannot be read (not a regular file, or no permission)"


def verify_photos(store: GalleryStore, report: VerifyReport, progress: bool = False) -> None:
    """Re-read every enrolled face's photo (images recorded as unusable are not searched, and are left out), one
    file at a time, into ``report``."""
    faces = [r for r in store.list_images() if r.status == "ok"]
    report.photos = 0
    answers = {"photo_changed": "409 image_file_changed"}  # else 404 image_file_missing

    def remedy(kind: str) -> str:
        return ("restore the enrolled file, or remove the subject (`lookalike gallery remove SUBJECT --db "
                f"{report.gallery}`) and enrol its photos again; until then the service answers "
                f"{answers.get(kind, '404 image_file_missing')} when it shows the image")
    for record in tqdm(faces, desc="verify: photos", unit="img", disable=not progress, leave=False):
        if not os.path.isabs(record.path):  # Gallery.add_embeddings: "<source>/<row>", no file
            report.photos_absent += 1
            continue
        report.photos += 1
        found = photo_problem(record)
        if found is not None:
            kind, message = found
            report.problem(kind, message, remedy(kind), image_id=record.id, subject=record.subject, path=record.path)
