"""The layers stay layers: stage 2 (priors) never imports stage 1 (tokenizers_ar) or pipelines,
stage 1 never imports priors or pipelines, and the decoding strategies sit below `generate`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(package: str) -> dict[str, set[str]]:
    """Module path -> the top-level modules it imports (any depth of the file)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
        out[str(path.relative_to(ROOT))] = found
    return out


def test_stage_two_never_imports_stage_one_or_pipelines():
    for path, mods in imports("priors").items():
        bad = {m for m in mods if m.split(".")[0] in ("tokenizers_ar", "pipelines")}
        assert not bad, f"{path} imports {sorted(bad)}"


def test_stage_one_never_imports_stage_two_or_pipelines():
    for path, mods in imports("tokenizers_ar").items():
        bad = {m for m in mods if m.split(".")[0] in ("priors", "pipelines")}
        assert not bad, f"{path} imports {sorted(bad)}"


def test_decoding_layers_have_no_cycle():
    """processors <- decoding <- strategies (sampling, beam, speculative) <- generate: nothing
    below `generate` imports a strategy, `generate`, or the package front (priors/__init__)."""
    table = imports("priors")
    strategies = {"priors.sampling", "priors.beam", "priors.speculative"}
    for path in ("priors/processors.py", "priors/decoding.py", "priors/sampling.py",
                 "priors/beam.py", "priors/speculative.py"):
        bad = table[path] & (strategies | {"priors.generate", "priors"})
        assert not bad, f"{path} imports {sorted(bad)}"
    assert "priors.decoding" not in table["priors/processors.py"]
    assert strategies <= table["priors/generate.py"]
