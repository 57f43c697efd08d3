"""Each DVC stage declares as dependencies every project module its entry point imports.

A change to any module a stage runs must rerun that stage; this test imports
each stage's module in a fresh interpreter, lists the project files it loaded
and checks that ``dvc.yaml`` names each one (or a folder holding it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

_PROBE = """
import json, sys
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)})))
"""


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _loaded_project_files(module: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    ).stdout
    files = set()
    for name in json.loads(out):
        path = Path(name).resolve()
        for root in (REPO / "src", REPO / "stages"):
            if path.is_relative_to(root):
                files.add(path.relative_to(REPO).as_posix())
    return files


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_its_imports(stage: str) -> None:
    spec = _stages()[stage]
    cmd = spec["cmd"]
    assert cmd.startswith("python -m stages."), cmd
    module = cmd.split()[-1]
    deps = [str(d).rstrip("/") for d in spec.get("deps", [])]
    loaded = _loaded_project_files(module)
    assert f"{module.replace('.', '/')}.py" in loaded
    missing = sorted(f for f in loaded if not any(f == d or f.startswith(d + "/") for d in deps))
    assert not missing, f"stage {stage} imports files its deps do not cover: {missing}"
    # and no dependency on a project source file the stage does not load
    stale = sorted(d for d in deps if d.endswith(".py") and d not in loaded)
    assert not stale, f"stage {stage} depends on source files it does not import: {stale}"
