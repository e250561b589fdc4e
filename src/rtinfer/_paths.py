"""Paths that must stay inside a folder: a model repository, an artifact, an ONNX file's own
folder. The folder's *real* path is the boundary, so neither ``..`` nor a symlink leaves it.

    check_name("cnn")                          # "cnn"; InvalidInputError for "..", "a/b", ""
    contained(root, root / "cnn" / "1")        # the real path, or UnsafePathError
    relative_inside(folder, "weights.bin")     # a path a file names, checked the same way
    files_inside(root, root / "cnn" / "1")     # every file below, each link checked

A check and the open that follows are two steps: a symlink swapped in between by someone who
can write the repository is not caught. Writers of the repository are trusted with what it
serves; what is guarded is a client (a model name, a request) or a file's content (a config,
a manifest, an ONNX external-data reference) steering the server outside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from rtinfer.errors import InvalidInputError, UnsafePathError

__all__ = ["MAX_NAME_BYTES", "check_name", "contained", "files_inside", "relative_inside"]

#: Longest name, in UTF-8 bytes: one path component on Linux and macOS (NAME_MAX).
MAX_NAME_BYTES = 255


def check_name(name: object, what: str = "model") -> str:
    """``name`` when it is a plain name (one path component, printable, not hidden)."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"a {what} name must be a non-empty string, got {name!r}")
    shown = name if len(name) <= 60 else name[:57] + "..."
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidInputError(f"{what} name {shown!r} is longer than {MAX_NAME_BYTES} bytes")
    if name in (".", "..") or name.startswith("."):
        raise InvalidInputError(f"{what} name {shown!r} is not allowed: names may not start "
                                "with '.' (that would leave the repository or hide the folder)")
    if "/" in name or "\\" in name or not name.isprintable():
        raise InvalidInputError(f"{what} name {shown!r} is not allowed: a name is one folder "
                                "name, without '/', '\\' or control characters")
    return name


def contained(root: Path, path: Path) -> Path:
    """The real path of ``path``, which must be ``root``'s real path or below it."""
    boundary = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != boundary and boundary not in real.parents:
        raise UnsafePathError(f"{path} resolves to {real}, outside {boundary}; symlinks and "
                              "'..' may not leave it")
    return real


def relative_inside(folder: Path, name: object, what: str = "file",
                    boundary: Path | None = None) -> Path:
    """``folder / name`` for a relative ``name`` read from a file: no absolute path, no
    ``..``, and its real path inside ``boundary`` (default: ``folder``)."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or "\\" in name:
        raise UnsafePathError(f"{what} {name!r} must be a relative path inside {folder}")
    if ".." in Path(name).parts:
        raise UnsafePathError(f"{what} {name!r} may not contain '..': it must stay inside "
                              f"{folder}")
    path = folder / name
    contained(boundary or folder, path)
    return path


def files_inside(root: Path, folder: Path, _seen: set[Path] | None = None) -> list[Path]:
    """Every file below ``folder`` (sorted), refusing any whose real path leaves ``root``;
    a linked folder is listed once (a link back up is a loop, not more files)."""
    seen = _seen if _seen is not None else set()
    real_folder = contained(root, folder)
    if real_folder in seen:
        return []
    seen.add(real_folder)
    out = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        seen.add(Path(os.path.realpath(top)))
        for d in dirs:
            if os.path.islink(os.path.join(top, d)):  # not walked into: checked, then listed
                out.extend(files_inside(root, contained(root, Path(top, d)), seen))
        for f in files:
            path = Path(top, f)
            if path.is_symlink():
                contained(root, path)
            out.append(path)
    return sorted(out)
