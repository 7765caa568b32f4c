"""Rebuild a default model shipped with lookalike: LFW without the PubFig people, faces at 20 px, full resolution,
20 px probes against full-resolution gallery faces, or full-resolution probes against 20 px gallery faces.

    python benchmarks/default_model.py [--lowres 20|full|20-probes|20-gallery] [--lfw ../shared/data/lfw]
        [--overlap ../shared/data/pubfig-lfw-overlap.txt] [--misspelt benchmarks/pubfig-people-misspelt-in-lfw.txt]
        [--out runs/default-model] [--model src/lookalike/models/default-lowres20.lkm] [--cache cache/lookalike.sqlite]

(``make default-model`` runs it for all four.) Writes OUT/lfw-without-pubfig.csv (the training manifest: every LFW
image except those of the people PubFig shares with LFW — the overlap list, and three PubFig people whose LFW folder
names are misspelt so that the list misses them — so that PubFig measures transfer to unseen people),
OUT/command-<model>.txt (the ``lookalike train`` command), then runs that command. The recipe was fixed before
any PubFig number was seen: the LDA disambiguator, seed 0, 20 px bicubic faces for probes and gallery (or
full-resolution faces: the same recipe, nothing else changed), the default aligner and depth; everything else is
chosen on the model's own validation split of LFW people. ``20-probes`` is the same recipe for 20 px probes against
full-resolution gallery faces, with the full-resolution model's matcher (the default, ``torch-flip``; ``torch``
before flip averaging became the full-resolution default) so that it searches that model's galleries: identify
gives it the faces at most 20 px across. ``20-gallery`` is the recipe for sharp
probes against 20 px gallery faces (``--lowres 20 --lowres-apply gallery``, the ``torch-flip`` matcher of the 20 px
model's galleries): identify gives it the faces at least 48 px across searched against those (choices and
measurements: README).
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
from pathlib import Path

from lookalike.data.folders import load_folders

MANIFEST = "lfw-without-pubfig.csv"
LOWRES = (20, "full", "20-probes", "20-gallery")


def overlap_folders(path: str | Path) -> set[str]:
    """The LFW folder names of the people listed in ``path``, one a line (``#`` starts a comment), spelt with
    spaces (PubFig's list) or underscores (LFW's folders)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return {line.replace(" ", "_") for line in lines if line}


def write_manifest(lfw: str | Path, exclude: set[str], csv_path: Path) -> dict[str, int]:
    """A ``path,identity`` CSV of every LFW image whose person is not in ``exclude`` (paths relative to the
    CSV); returns its counts. Raises when an excluded person is not an LFW folder (a misspelt list)."""
    table = load_folders(lfw)
    people = set(table.identities.tolist())
    unknown = sorted(exclude - people)
    if unknown:
        raise ValueError(f"{len(unknown)} excluded people are not LFW folders: {', '.join(unknown[:5])}")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    kept = 0
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "identity"])
        for path, identity in zip(table.paths, table.identities, strict=True):
            if identity not in exclude:
                w.writerow([Path(os.path.relpath(path, csv_path.parent)).as_posix(), identity])
                kept += 1
    return {"people": len(people - exclude), "images": kept, "excluded_people": len(exclude),
            "excluded_images": len(table) - kept}


def model_name(lowres: int | str) -> str:
    """The shipped file of the default model for ``lowres`` (20, ``full``, ``20-probes`` or ``20-gallery``)."""
    return f"default-{'full' if lowres == 'full' else f'lowres{lowres}'}.lkm"


def train_command(manifest: Path, model: Path, cache: str, lowres: int | str = 20) -> list[str]:
    """The ``lookalike train`` arguments that build the default model for ``lowres`` from ``manifest``."""
    faces = {"full": [], "20-probes": ["--lowres", "20", "--lowres-apply", "probes"],
             "20-gallery": ["--lowres", "20", "--lowres-apply", "gallery"]}.get(str(lowres), ["--lowres", str(lowres)])
    return ["train", "--data", str(manifest), *faces, "--seed", "0", "--model", str(model), "--cache", cache,
            "--no-progress"]


def main(argv: list[str] | None = None) -> int:
    from lookalike.cli import main as lookalike

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lfw", default="../shared/data/lfw", help="LFW, one folder per person")
    p.add_argument("--overlap", default="../shared/data/pubfig-lfw-overlap.txt", help="PubFig people to leave out")
    p.add_argument("--misspelt", default=str(Path(__file__).with_name("pubfig-people-misspelt-in-lfw.txt")),
                   help="LFW folders of PubFig people the overlap list misses (misspelt in LFW)")
    p.add_argument("--out", default="runs/default-model", help="folder for the manifest and the command")
    p.add_argument("--lowres", default="20", choices=[str(x) for x in LOWRES],
                   help="the model's faces: 20 px (bicubic, probes and gallery), full resolution, 20 px probes "
                        "against full-resolution gallery faces (the full-resolution model's matcher), or sharp "
                        "probes against 20 px ones")
    p.add_argument("--model", help="model file to write (default: src/lookalike/models/default-<faces>.lkm)")
    p.add_argument("--cache", default="cache/lookalike.sqlite", help="embedding cache (as the Makefile's)")
    args = p.parse_args(argv)
    lowres = args.lowres if args.lowres in ("full", "20-probes", "20-gallery") else int(args.lowres)
    model = Path(args.model or Path("src/lookalike/models") / model_name(lowres))
    out = Path(args.out)
    counts = write_manifest(args.lfw, overlap_folders(args.overlap) | overlap_folders(args.misspelt), out / MANIFEST)
    print(f"{out / MANIFEST}: {counts['people']} people, {counts['images']} images (left out "
          f"{counts['excluded_people']} PubFig people, {counts['excluded_images']} images)")
    cmd = train_command(out / MANIFEST, model, args.cache, lowres)
    (out / f"command-{model.stem}.txt").write_text("lookalike " + shlex.join(cmd) + "\n", encoding="utf-8")
    print("lookalike " + shlex.join(cmd))
    return lookalike(cmd)


if __name__ == "__main__":
    sys.exit(main())
