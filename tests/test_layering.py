"""The layering of DESIGN.md, enforced: every arrow points one way."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IO_MODULES = {"os", "io", "socket", "subprocess", "logging", "time", "datetime", "shutil",
              "pathlib", "tempfile", "threading", "usb", "zstandard", "tqdm", "fcntl", "sys"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def py_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_formats_is_pure() -> None:
    bad = []
    for path in py_files("formats"):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in IO_MODULES or top in ("imager", "fixtures", "tests"):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert bad == []


def test_formats_never_opens_or_prints() -> None:
    bad = []
    for path in py_files("formats"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("open", "print", "input"):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} calls {node.func.id}()")
    assert bad == []


def test_only_cli_imports_tqdm_and_prints() -> None:
    bad = []
    for path in py_files("imager"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("imager/cli"):
            continue
        if any(n.split(".")[0] == "tqdm" for n in imports_of(path)):
            bad.append(f"{rel} imports tqdm")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "print":
                bad.append(f"{rel}:{node.lineno} prints")
    assert bad == []


def test_only_one_module_imports_pyusb_transport() -> None:
    users = sorted(path.relative_to(REPO).as_posix() for path in py_files("imager")
                   if any(n == "usb" or n.startswith("usb.") for n in imports_of(path)))
    assert len(users) <= 1, users


def test_only_container_modules_import_zstandard() -> None:
    users = sorted(path.relative_to(REPO).as_posix() for path in py_files("imager")
                   if "zstandard" in {n.split(".")[0] for n in imports_of(path)})
    assert all(u.startswith(("imager/image/", "imager/repo/")) for u in users), users


def test_imager_never_imported_by_formats_and_cli_never_imported_by_library() -> None:
    bad = []
    for path in py_files("imager"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("imager/cli") or rel == "imager/__main__.py":
            continue
        if any(n.startswith("imager.cli") for n in imports_of(path)):
            bad.append(f"{rel} imports the CLI")
    assert bad == []
