"""docs/plugins.md runs as written: its Python blocks form one plugin module, tokar's contract
suites run on every component in it (in a pytest of their own), and its recipe trains, samples
and scores with the plugin registered."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines import Pipeline

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "plugins.md").read_text()


def write_module(tmp_path: Path) -> Path:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE, flags=re.S)
    assert len(blocks) >= 7, "the guide lost its examples"
    path = tmp_path / "test_my_plugin.py"  # test_*: pytest collects the contract classes in it
    path.write_text("\n\n".join(blocks))
    return path


def test_the_guides_components_pass_every_contract_suite(tmp_path):
    module = write_module(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, summary


def test_the_guides_recipe_trains_samples_and_scores(tmp_path, fresh_plugins):
    module = write_module(tmp_path)
    spec = importlib.util.spec_from_file_location("my_plugin", module)
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    fresh_plugins.register(plugin, name="my-plugin")
    assert not fresh_plugins.registries.problems
    recipe = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", GUIDE, flags=re.S)[0])
    pipe = Pipeline.from_recipe(recipe)
    result = pipe.train(tmp_path / "run", progress=False)
    assert result.steps == 30 and result.val.unit == "char"
    texts = Pipeline.load(tmp_path / "run").sample(2)
    assert all("1" not in t.split() for t in texts)  # my_ban_token bans the word "1" (id 1)
    assert pipe.score().bits_per_unit > 0
