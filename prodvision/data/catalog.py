"""User catalogs: an image folder (one sub-folder per class) or a CSV manifest, as e-commerce exports come.

Both return a :class:`CatalogDataset`: a list of ``(path, label)`` samples plus ``classes``, loaded through the
one image loader (:func:`prodvision.data.images.load_image`). Every file that is not used is reported in
``dataset.skipped`` with the reason -- nothing is dropped silently, nothing is ever deleted.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from torch.utils.data import Dataset

from ..config import ImageLimits
from ..errors import DataError, DataNotFoundError
from ..progress import progress_bar
from .images import IMG_EXTENSIONS, ImageLoadError, load_image

__all__ = ["CatalogDataset", "Skipped", "ScanReport", "scan_folder", "scan_files", "class_folder", "folder_classes"]

_NOT_IN_FOLDER_NAMES = re.compile(r'[/\\ :*?"<>|]')


def class_folder(name: str) -> str:
    """The folder name that holds class ``name``'s images: characters a folder name cannot have (``/``, ``\\``,
    space, ``:*?"<>|``) become ``_`` -- ``"T-shirt/top"`` -> ``"T-shirt_top"``, ``"Ankle boot"`` -> ``"Ankle_boot"``.
    The one mapping between class names and folders, both ways (:func:`folder_classes` inverts it)."""
    return _NOT_IN_FOLDER_NAMES.sub("_", name)


def folder_classes(classes: Sequence[str]) -> dict[str, str]:
    """Folder name -> class name for ``classes``, by :func:`class_folder`.

    Raises:
        DataError: two classes would share one folder (e.g. ``"a b"`` and ``"a_b"``).
    """
    out: dict[str, str] = {}
    for c in classes:
        f = class_folder(c)
        if f in out and out[f] != c:
            raise DataError(f"classes {out[f]!r} and {c!r} would both be stored in the folder {f!r}; rename one")
        out[f] = c
    return out


@dataclass(frozen=True)
class Skipped:
    """A file that a loader did not use, and why."""

    path: str
    code: str  # an ImageLoadError code, or "hidden", "extension", "no_label", "bad_row", "duplicate"
    reason: str


@dataclass
class ScanReport:
    """The result of checking files the way training will load them."""

    ok: list[str] = field(default_factory=list)
    refused: list[Skipped] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(s.code for s in self.refused)
        return {"ok": len(self.ok), "refused": len(self.refused), **dict(sorted(c.items()))}

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "refused": [asdict(s) for s in self.refused], "summary": self.counts}


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in rel.parts)


def _walk(root: Path) -> tuple[list[Path], list[Skipped]]:
    """All regular files under root in sorted order; hidden files/folders and symbolic links to folders (not
    followed: they can loop or lead out of the catalog) reported as skipped."""
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        for name in [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            if not _is_hidden(rel_dir / name):
                skipped.append(Skipped(str(root / rel_dir / name), "symlink", "a symbolic link to a folder is not "
                                       "followed; copy or move its images into the catalog"))
        for name in sorted(filenames):
            rel = rel_dir / name
            if _is_hidden(rel):
                skipped.append(Skipped(str(root / rel), "hidden", "hidden file or inside a hidden folder"))
            else:
                files.append(root / rel)
    return files, skipped


def scan_files(
    paths: Iterable[str | os.PathLike], *, limits: ImageLimits = ImageLimits(), workers: int = 2, progress: bool = False
) -> ScanReport:
    """Fully decode each file with :func:`load_image`; return which are ok and which are refused (and why)."""
    paths = [str(p) for p in paths]

    def check(p: str) -> Skipped | None:
        if not p.lower().endswith(IMG_EXTENSIONS):
            return Skipped(p, "extension", f"extension is not one of {', '.join(IMG_EXTENSIONS)}")
        try:
            load_image(p, limits=limits)
        except ImageLoadError as e:
            return Skipped(p, e.code, e.reason)
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decoding releases the GIL
        results = pool.map(check, paths)
        if progress:
            results = progress_bar(results, total=len(paths), desc="scan", unit="img")
        report = ScanReport()
        for p, res in zip(paths, results):
            (report.refused.append(res) if res else report.ok.append(p))
    return report


def scan_folder(root: str | os.PathLike, *, limits: ImageLimits = ImageLimits(), progress: bool = False) -> ScanReport:
    """Check every file under ``root`` the way training loads it. Never modifies or deletes anything."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: not a directory")
    files, hidden = _walk(root)
    report = scan_files(files, limits=limits, progress=progress)
    report.refused = hidden + report.refused
    return report


class CatalogDataset(Dataset):
    """Images on disk with labels. ``samples[i] = (path, class_index)``; ``classes[class_index] = name``.

    Items are ``(transform(image), class_index)`` where ``image`` is a PIL image in ``mode`` ("RGB" or "L").
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        *,
        transform: Callable | None = None,
        mode: str = "RGB",
        limits: ImageLimits = ImageLimits(),
        skipped: Sequence[Skipped] = (),
        root: str | None = None,
        product_ids: dict[str, str] | None = None,
    ):
        self.product_ids = product_ids  # file -> product id, from a CSV's ``group`` column (None: not declared)
        self.samples = list(samples)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform, self.mode, self.limits = transform, mode, limits
        self.skipped = list(skipped)
        self.root = root

    @property
    def targets(self) -> list[int]:
        return [y for _, y in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, y = self.samples[i]
        im = load_image(path, mode=self.mode, limits=self.limits)  # raises ImageLoadError naming the file
        return (self.transform(im) if self.transform else im), y

    def subset(self, indices: Iterable[int], *, transform: Callable | None = None) -> "CatalogDataset":
        """A new dataset with the given samples (same classes), e.g. one split."""
        return CatalogDataset(
            [self.samples[i] for i in indices], self.classes, transform=transform or self.transform,
            mode=self.mode, limits=self.limits, root=self.root,
        )

    def save_classes(self, path: str | os.PathLike) -> None:
        """Write the class order (index -> name) as JSON so a model's outputs can always be named."""
        Path(path).write_text(json.dumps({"classes": self.classes}, indent=1) + "\n")

    def summary(self) -> str:
        counts = Counter(self.targets)
        per = ", ".join(f"{c}={counts.get(i, 0)}" for i, c in enumerate(self.classes))
        return f"{len(self)} images in {len(self.classes)} classes ({per}); {len(self.skipped)} files skipped"

    def __repr__(self) -> str:
        return f"CatalogDataset(root={self.root!r}, {self.summary()})"

    # ---- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        *,
        transform: Callable | None = None,
        mode: str = "RGB",
        verify: bool = True,
        limits: ImageLimits = ImageLimits(),
        classes: Sequence[str] | None = None,
    ) -> "CatalogDataset":
        """ImageFolder layout: ``root/<class>/**/<image>``. Hidden folders (``.ipynb_checkpoints``) are never classes.

        Args:
            verify: decode every image now and skip (and report) the bad ones; otherwise only extensions are
                checked and a bad file raises :class:`ImageLoadError` when it is read.
            classes: a saved class order to use (e.g. a model's); folders not in it are reported as skipped. A
                class whose name is not a valid folder name is read from :func:`class_folder`'s folder
                (``T-shirt_top`` for ``"T-shirt/top"``).
        """
        root = Path(root)
        if not root.is_dir():
            raise DataNotFoundError(f"{root}: not a directory (expected one sub-folder per class)")
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_hidden(Path(p.name)))
        classes = list(classes) if classes is not None else found
        if not classes:
            raise DataError(f"{root}: no class folders found (expected root/<class>/<image files>)")
        index = {f: classes.index(c) for f, c in folder_classes(classes).items()}
        files, skipped = _walk(root)
        candidates = []
        for f in files:
            rel = f.relative_to(root)
            if len(rel.parts) < 2:
                skipped.append(Skipped(str(f), "no_label", "file at the top level is not inside a class folder"))
            elif rel.parts[0] not in index:
                skipped.append(Skipped(str(f), "no_label", f"folder {rel.parts[0]!r} is not one of the classes' "
                                                          f"folders {sorted(index)}"))
            elif not f.name.lower().endswith(IMG_EXTENSIONS):
                skipped.append(Skipped(str(f), "extension", "not an image file extension"))
            else:
                candidates.append((str(f), index[rel.parts[0]]))
        samples, skipped = cls._verify(candidates, skipped, verify, limits)
        return cls(samples, classes, transform=transform, mode=mode, limits=limits, skipped=skipped, root=str(root))

    @classmethod
    def from_csv(
        cls,
        csv_path: str | os.PathLike,
        *,
        root: str | os.PathLike | None = None,
        path_col: str = "path",
        label_col: str = "label",
        path_format: str = "{}",
        transform: Callable | None = None,
        mode: str = "RGB",
        verify: bool = True,
        limits: ImageLimits = ImageLimits(),
        classes: Sequence[str] | None = None,
        group_col: str = "group",
    ) -> "CatalogDataset":
        """A CSV manifest with a path column and a label column (and optionally ``group_col``, the product each
        file shows: the shots of one product never straddle a split).

        Paths are relative to ``root`` (default: the CSV's folder). ``path_format`` turns the path column into a
        file name, e.g. Kaggle "Fashion Product Images" ``styles.csv``: ``path_col="id", label_col="articleType",
        path_format="images/{}.jpg"``. Rows with a missing file, an empty label or the wrong number of fields, and
        a repeated row, are reported in ``skipped``; a file listed with two different labels is a :class:`DataError`
        naming both rows. Classes are the sorted distinct labels unless ``classes`` is given.
        """
        csv_path = Path(csv_path)
        base = Path(root) if root is not None else csv_path.parent
        rows, skipped = [], []
        first: dict[str, tuple[int, str, str]] = {}  # file -> (line, path as written, label) of its first row
        if not csv_path.is_file():
            raise DataNotFoundError(f"{csv_path}: no such CSV manifest")
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{csv_path}: the manifest is empty")
            header = [h.strip() for h in header]
            for col in (path_col, label_col):
                if col not in header:
                    raise DataError(f"{csv_path}: no column {col!r}; the header has {header}")
            ip, il = header.index(path_col), header.index(label_col)
            ig = header.index(group_col) if group_col in header else None
            products: dict[str, str] = {}
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                where = f"{csv_path}:{lineno}"
                if len(row) != len(header):
                    skipped.append(Skipped(where, "bad_row", f"{len(row)} fields, the header has {len(header)}"))
                    continue
                label, rel = row[il].strip(), row[ip].strip()
                if not label:
                    skipped.append(Skipped(where, "no_label", "empty label"))
                    continue
                path = str(base / path_format.format(rel))
                key = os.path.normpath(path)  # "a.png" and "./a.png" are one file
                if key in first:
                    line0, rel0, label0 = first[key]
                    if label0 != label:
                        raise DataError(f"{csv_path}: line {line0} labels {rel0!r} {label0!r} and line {lineno} "
                                        f"labels {rel!r} {label!r}, one file with two labels; fix or remove one of "
                                        "the rows")
                    skipped.append(Skipped(where, "duplicate", f"{rel!r} is listed again (first at line {line0})"))
                    continue
                first[key] = (lineno, rel, label)
                if ig is not None:
                    if not row[ig].strip():
                        raise DataError(f"{csv_path}: line {lineno} ({rel!r}) has an empty {group_col!r}; every "
                                        f"row names its product (a product of one photo: any id of its own)")
                    products[path] = row[ig].strip()
                rows.append((path, label))
        classes = list(classes) if classes is not None else sorted({lab for _, lab in rows})
        candidates = []
        for p, lab in rows:
            if lab not in classes:
                skipped.append(Skipped(p, "no_label", f"label {lab!r} is not one of the classes"))
            elif not p.lower().endswith(IMG_EXTENSIONS):
                skipped.append(Skipped(p, "extension", "not an image file extension"))
            else:
                candidates.append((p, classes.index(lab)))
        if not candidates and not skipped:
            raise DataError(f"{csv_path}: the manifest has a header but no rows")
        samples, skipped = cls._verify(candidates, skipped, verify, limits)
        return cls(samples, classes, transform=transform, mode=mode, limits=limits, skipped=skipped, root=str(base),
                   product_ids=products if ig is not None else None)

    @staticmethod
    def _verify(candidates, skipped, verify, limits):
        if not verify:
            missing = [Skipped(p, "missing", "no such file") for p, _ in candidates if not os.path.isfile(p)]
            bad = {s.path for s in missing}
            return [c for c in candidates if c[0] not in bad], skipped + missing
        report = scan_files([p for p, _ in candidates], limits=limits)
        bad = {s.path for s in report.refused}
        return [c for c in candidates if c[0] not in bad], skipped + report.refused
