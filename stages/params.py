"""DVC stage ``params``: validate the whole params file before any other stage runs.

``dvc repro`` deletes a stage's outputs before running it, so a typo in
``params.yaml`` found by the stage itself would cost the previous outputs. This
stage runs first (every other stage depends on its output for its own section),
checks every section at once and writes each normalised section to
``data/interim/params/<section>.json``. A section file changes only when its
section's effective values change, so only the stages that use it rerun.
"""

from __future__ import annotations

from memclean import project
from memclean.io import write_json
from memclean.options import SECTIONS


def main() -> None:
    params = project.params()
    for name in SECTIONS:
        write_json(params.section(name), project.PARAMS_DIR / f"{name}.json")
    project.log.info("params.yaml is valid: %s", ", ".join(SECTIONS))


if __name__ == "__main__":
    project.run_stage(main, "params")
