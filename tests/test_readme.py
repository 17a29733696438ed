"""The README's Python examples run as written (the training one with fewer steps)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        code = block.replace('"recipes/', f'"{ROOT}/recipes/').replace("max_steps=300", "max_steps=5")
        exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "runs" / "digits" / "prior" / "model.safetensors").is_file()
    assert len(namespace["images"]) == 10
