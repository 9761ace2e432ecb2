from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scvi_gen
import scvi_gen.metrics
import scvi_gen.preprocessing

SRC = Path(scvi_gen.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Modules imported anywhere in ``path`` (absolute names; relative ones resolved)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("name", ["CommonSpace", "TransformedData", "select_hvgs", "TARGET_SUM"])
def test_metrics_re_exports_preprocessing(name: str) -> None:
    from scvi_gen.metrics import _common_space

    assert getattr(_common_space, name) is getattr(scvi_gen.preprocessing, name)
    if name != "TARGET_SUM":
        assert getattr(scvi_gen.metrics, name) is getattr(scvi_gen.preprocessing, name)


@pytest.mark.parametrize("subpackage", ["model", "baselines", "preprocessing"])
def test_models_and_baselines_never_import_the_metrics(subpackage: str) -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in sorted((SRC / subpackage).rglob("*.py"))
        if any(m.startswith("scvi_gen.metrics") for m in imported_modules(path))
    ]
    assert offenders == []


def test_target_sum_is_defined_once() -> None:
    definitions = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == "TARGET_SUM" for t in targets):
                definitions.append(str(path.relative_to(SRC)))
    assert definitions == ["preprocessing/_normalize.py"]


def test_batches_are_read_under_scvi_tools_count_key() -> None:
    from scvi import REGISTRY_KEYS

    from scvi_gen.preprocessing import _genes

    assert _genes._X_KEY == REGISTRY_KEYS.X_KEY
