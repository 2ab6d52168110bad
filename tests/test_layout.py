"""The package layout of docs/internals.md holds: imports run one way between modules and packages."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "shogitrain"


def _imports() -> dict[str, set[str]]:
    """module → the shogitrain modules it imports (anywhere in it, function-level imports too)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def test_no_module_imports_one_that_imports_it_back():
    edges = _imports()
    assert len(edges) > 30
    mutual = sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges[b])
    assert mutual == []


def test_records_do_not_import_shards_and_train_does_not_import_evaluate():
    edges = _imports()
    for module, targets in edges.items():
        if module.startswith("shogitrain.records"):
            assert not any(t.startswith("shogitrain.shards") for t in targets), module
        if module.startswith("shogitrain.train"):
            assert "shogitrain.evaluate" not in targets, module
        if module.startswith("shogitrain.shogi"):  # the vocabulary sits at the bottom (with names.py)
            assert all(t.startswith("shogitrain.shogi") or t == "shogitrain.names" for t in targets), module
    assert "shogitrain.shogi.vocabulary" in edges["shogitrain.records.csa"]
