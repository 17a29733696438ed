from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.recipe.loader import TrainConfig, apply_overrides, load_recipe
from plugins.errors import RecipeError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "recipes").rglob("*.yaml"))
RUNNABLE = [p for p in SHIPPED if not p.parent.name.startswith("_")]


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.prior.name and recipe.tokenizer.name and recipe.data.name


def test_shakespeare_recipe_has_nanogpt_cpu_settings():
    r = load_recipe(ROOT / "recipes/shakespeare/char_gpt.yaml")
    p, t = r.prior.config, r.train
    assert (p.n_layer, p.n_head, p.n_embd, p.block_size, p.dropout) == (4, 4, 128, 64, 0.0)
    assert (t.batch_size, t.max_steps, t.lr) == (12, 2000, 1e-3)


def write(tmp_path: Path, name: str, body: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


BASE = {
    "data": {"source": "text", "path": "${data_dir}/tiny.txt"},
    "tokenizer": {"name": "char"},
    "prior": {"name": "gpt", "n_layer": 2, "block_size": 32},
    "train": {"max_steps": 10},
}


def test_extends_deep_merges_and_data_dir_comes_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKAR_DATA_DIR", "/somewhere/data")
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "prior": {"n_layer": 3},
                                           "train": {"lr": 0.01}})
    r = load_recipe(child)
    assert r.prior.config.n_layer == 3 and r.prior.config.block_size == 32
    assert r.train.max_steps == 10 and r.train.lr == 0.01
    assert r.data.config.path == "/somewhere/data/tiny.txt"


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", {"extends": "b.yaml"})
    write(tmp_path, "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_overrides_set_parse_and_delete():
    raw = apply_overrides(BASE, ["train.lr=1e-4", "prior.n_head=2", "sample.temperature=0.5",
                                 "~prior.n_layer", "train.betas=[0.9, 0.99]"])
    assert raw["train"]["lr"] == 1e-4 and isinstance(raw["train"]["lr"], float)
    assert raw["prior"] == {"name": "gpt", "block_size": 32, "n_head": 2}
    assert raw["sample"] == {"temperature": 0.5} and raw["train"]["betas"] == [0.9, 0.99]
    r = load_recipe(BASE, ["~prior.n_layer"])
    assert r.prior.config.n_layer == 4  # back to the default
    with pytest.raises(RecipeError, match="no key 'prior.nope' to delete"):
        apply_overrides(BASE, ["~prior.nope"])
    with pytest.raises(RecipeError, match="key.path=value"):
        apply_overrides(BASE, ["prior.n_head"])


def test_all_errors_reported_at_once_with_paths_valid_keys_and_closest_match():
    with pytest.raises(RecipeError) as err:
        load_recipe(BASE, ["prior.n_layr=2", "train.lr=fast", "tokenizer.unk=maybe",
                           "trian.max_steps=3", "data.pth=x"])
    e = err.value
    assert len(e.problems) == 5, e.problems
    text = str(e)
    assert "prior.n_layr: unknown key. Did you mean 'n_layer'? Valid keys: n_layer, n_head" in text
    assert "train.lr: Input should be a valid number" in text and "'fast'" in text
    assert "tokenizer.unk: Input should be a valid boolean" in text
    assert "unknown section 'trian'. Did you mean 'train'?" in text
    assert "data.pth: unknown key. Did you mean 'path'?" in text


def test_unknown_component_and_missing_sections():
    with pytest.raises(RecipeError) as err:
        load_recipe({"data": {"source": "txt", "path": "x"}, "prior": {"n_layer": 2}})
    text = str(err.value)
    assert "data.source: unknown source 'txt'. Did you mean 'text'?" in text
    assert "missing section 'tokenizer'" in text
    assert re.search(r"prior.name: missing; choose one of [a-z_, ]*\bgpt\b", text)


def test_wrong_types_and_ranges():
    with pytest.raises(RecipeError, match=r"prior.block_size: Input should be greater than or equal to 2"):
        load_recipe(BASE, ["prior.block_size=1"])
    with pytest.raises(RecipeError, match=r"train.mixed_precision"):
        load_recipe(BASE, ["train.mixed_precision=fp8"])
    with pytest.raises(RecipeError, match=r"min_lr .* must not exceed lr"):
        load_recipe(BASE, ["train.min_lr=1", "train.lr=0.1"])


def test_unknown_reference_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match=r"data.path: unknown reference \$\{home\}"):
        load_recipe({**BASE, "data": {"source": "text", "path": "${home}/x"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe(BASE)
    again = load_recipe(write(tmp_path, "resolved.yaml", r.to_dict()))
    assert again.to_dict() == r.to_dict()
    assert r.to_dict()["train"] == TrainConfig(max_steps=10).model_dump(mode="json")


def test_extends_replaces_a_section_that_names_another_component(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml",
                                           "prior": {"name": "lstm", "n_hidden": 64}})
    r = load_recipe(child)
    assert r.prior.name == "lstm" and r.prior.config.n_hidden == 64  # no GPT keys inherited
    assert r.train.max_steps == 10
