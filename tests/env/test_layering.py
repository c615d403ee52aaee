"""Grid data sits below the physics: ``env/network.py`` imports neither the physics nor the
pandapower interop (which import it), so there is no import circle among the three."""
from __future__ import annotations

import ast
from pathlib import Path

import env

ENV_DIR = Path(env.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_grid_data_imports_no_physics_and_no_interop():
    imported = _imported_modules(ENV_DIR / "network.py")
    assert not {m for m in imported if m.startswith(("env.physics", "env.interop"))}


def test_physics_and_interop_import_grid_data_one_way():
    assert "env.network" in _imported_modules(ENV_DIR / "physics" / "grid_flow.py")
    assert "env.network" in _imported_modules(ENV_DIR / "interop.py")
