"""The package's layers: imports run one way, from the command line down to the config.

Every ``import``/``from ... import`` of a vaegan module, at the top of a file or inside a
function, must point to the same package or a lower layer. Packages of one layer do not import
each other except where listed (the metrics read models to sample them; tools and evaluation
are siblings that share nothing).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "vaegan"
LAYERS = [
    {"errors"},
    {"config", "files", "threads"},
    {"images"},
    {"models", "data", "metrics"},
    {"storage"},
    {"training", "tools", "evaluation"},
    {"cli", "__init__"},
    {"__main__"},
]
SIDEWAYS = {("metrics", "models"), ("data", "models")}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(package: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if package in names)


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "vaegan" else [f"vaegan.{a.name}" for a in node.names]
            yield from ((node.lineno, n) for n in names if n.startswith("vaegan"))
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield node.lineno, "relative"
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("vaegan"))


def violations(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        here = _package(".".join(rel.parts))
        for line, target in _imports(path):
            if target == "relative":
                bad.append(f"{rel}:{line} relative import (use vaegan.<package>)")
                continue
            there = _package(target)
            if there == here or _layer(there) < _layer(here) or (here, there) in SIDEWAYS:
                continue
            bad.append(f"{rel}:{line} {here} -> {target}")
    return bad


def test_imports_run_one_way():
    bad = violations(ROOT)
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_check_has_teeth(tmp_path):
    pkg = tmp_path / "vaegan"
    (pkg / "storage").mkdir(parents=True)
    (pkg / "storage" / "ok.py").write_text("from vaegan.models import VAE\nfrom vaegan.storage.x import y\n")
    (pkg / "storage" / "up.py").write_text("def f():\n    from vaegan.training.trainer import Trainer\n")
    (pkg / "storage" / "rel.py").write_text("from .ok import VAE\n")
    assert violations(pkg) == ["vaegan/storage/rel:1 relative import (use vaegan.<package>)",
                               "vaegan/storage/up:2 storage -> vaegan.training.trainer"]
