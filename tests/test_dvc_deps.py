"""Each DVC stage declares as dependencies every project module its entry point imports.

A change to any module a stage runs must rerun that stage; this test imports
each stage's module in a fresh process, with the modules it names in
``LOADS_WHEN_TRAINING`` (the trainers, loaded only when a run trains), lists the
project files it loaded and checks that ``dvc.yaml`` names each one (or a folder
holding it).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

# One interpreter imports the heavy third-party libraries once (no project module), then forks
# a child per stage module: the child imports it and lists every module file it has loaded.
# Project files are only ever loaded after the fork, so each child sees its stage's own.
_PROBE = """
import importlib, json, os, sys
for lib in ("numpy", "pandas", "pyarrow", "torch", "torchvision", "sklearn.metrics", "scipy.fft", "PIL.Image",
            "faiss", "imagehash", "pydantic", "yaml", "jinja2", "tqdm"):
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
out = {}
for module in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        stage = importlib.import_module(module)
        for extra in getattr(stage, "LOADS_WHEN_TRAINING", ()):
            importlib.import_module(extra)
        files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
        with os.fdopen(write, "w") as fh:
            json.dump(files, fh)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        text = fh.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not text:
        raise SystemExit(f"importing {module} failed (status {status})")
    out[module] = json.loads(text)
print(json.dumps(out))
"""


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _module(spec: dict) -> str:
    cmd = spec["cmd"]
    assert cmd.startswith("python -m stages."), cmd
    return cmd.split()[-1]


@functools.cache
def _loaded_project_files() -> dict[str, set[str]]:
    """Per stage module: the project files (under src/ and stages/) that importing it loads."""
    modules = sorted({_module(spec) for spec in _stages().values()})
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    ).stdout
    loaded: dict[str, set[str]] = {}
    for module, names in json.loads(out).items():
        files = loaded[module] = set()
        for name in names:
            path = Path(name).resolve()
            for root in (REPO / "src", REPO / "stages"):
                if path.is_relative_to(root):
                    files.add(path.relative_to(REPO).as_posix())
    return loaded


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_its_imports(stage: str) -> None:
    spec = _stages()[stage]
    module = _module(spec)
    deps = [str(d).rstrip("/") for d in spec.get("deps", [])]
    loaded = _loaded_project_files()[module]
    assert f"{module.replace('.', '/')}.py" in loaded
    missing = sorted(f for f in loaded if not any(f == d or f.startswith(d + "/") for d in deps))
    assert not missing, f"stage {stage} imports files its deps do not cover: {missing}"
    # and no dependency on a project source file the stage does not load
    stale = sorted(d for d in deps if d.endswith(".py") and d not in loaded)
    assert not stale, f"stage {stage} depends on source files it does not import: {stale}"


#: Stages that start without importing torch (about 3 s of every start on a 2-core CPU; `dvc repro`
#: starts eight stages): all but dedup and score. validate loads it only for `retrain`.
LIGHT_STAGES = ("params", "ingest", "inject", "validate", "clean", "report")


def test_stages_that_never_train_start_without_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT_STAGES!r}:\n"
        "    importlib.import_module('stages.' + name)\n"
        "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "    if heavy:\n"
        "        raise SystemExit(f'stages.{name} imported {heavy[:3]}')\n"
        "import memclean.cli\n"
        "print('ok' if 'torch' not in sys.modules else 'memclean.cli imported torch')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:] or run.stdout
    assert run.stdout.strip() == "ok"
    # the stages that may train still have their trainers in their deps (through LOADS_WHEN_TRAINING)
    for stage in ("stages.score", "stages.validate"):
        assert {"src/memclean/train.py", "src/memclean/tdo.py"} <= _loaded_project_files()[stage]
