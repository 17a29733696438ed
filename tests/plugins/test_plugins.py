"""The plugin system: registries, the lazy manager, third-party plugins through pluggy and through
a real `tokar` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pipelines import Pipeline
from plugins import Registry, create_plugin_manager, hookimpl
from plugins.errors import RecipeError, RegistryError
from priors import Prior, StepOutput
from priors.testing import PriorContract
from tokenizers_ar import CharTokenizer, Layout

ROOT = Path(__file__).resolve().parents[2]


def test_importing_plugins_has_no_side_effects():
    code = "import sys, plugins; assert 'torch' not in sys.modules; " \
           "assert plugins.manager._manager is None"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_duplicate_names_name_both_providers():
    reg = Registry("tokenizer")
    reg.register("char", CharTokenizer, provider="first-plugin 1.0")
    expected = r"'char' is registered twice: by first-plugin 1.0 and by evil-plugin 2.0"
    with pytest.raises(RegistryError, match=expected):
        reg.register("char", object, provider="evil-plugin 2.0")


def test_unknown_name_lists_known_and_closest():
    reg = Registry("prior")
    for name in ("gpt", "lstm", "pixelcnn"):
        reg.register(name, object, provider="tokar")
    with pytest.raises(RegistryError) as err:
        reg.get("pixlecnn")
    msg = str(err.value)
    assert "unknown prior 'pixlecnn'" in msg and "Did you mean 'pixelcnn'?" in msg
    assert "gpt, lstm, pixelcnn" in msg


def test_names_must_be_identifiers():
    with pytest.raises(RegistryError, match="not valid"):
        Registry("source").register("my.module:Thing", object, provider="x")


def test_builtins_come_through_the_hooks():
    pm = create_plugin_manager(load_entrypoints=False)
    regs = pm.registries
    assert regs.tokenizers.entry("char").provider.startswith("tokar")
    assert {"gpt"} <= set(regs.priors.names())
    assert {"text", "hf", "sklearn_digits"} <= set(regs.sources.names())


class Bigram(Prior):
    """A third-party prior that exists only in this test: p(x_t | x_<t) = table[x_{t-1}]."""

    name = "bigram"
    layouts = frozenset({"seq"})

    def __init__(self, config, vocab_size, layout):
        super().__init__(config, vocab_size, layout)
        self.table = torch.nn.Parameter(torch.zeros(vocab_size + 1, vocab_size))  # row V = start

    def forward(self, ids, cond=None):
        prev = torch.cat([torch.full_like(ids[:, :1], self.vocab_size), ids[:, :-1]], dim=1)
        return self.table[prev]  # (B, T, V)

    def init_state(self, batch_size, cond=None):
        return StepOutput(self.table[self.vocab_size].expand(batch_size, -1), None)

    def step(self, state, ids):
        return StepOutput(self.table[ids], state)


class ThirdPartyPlugin:
    @staticmethod
    @hookimpl
    def tokar_register_priors(register):
        register("bigram", Bigram)


class TestBigramPassesTheShippedContract(PriorContract):
    """What a plugin author writes: the shipped suite on their prior (sequences only)."""

    @pytest.fixture
    def prior(self, make_prior):
        torch.manual_seed(0)
        return make_prior(7, Layout.seq()).eval()

    @pytest.fixture
    def make_prior(self):
        def make(vocab_size, layout):
            prior = Bigram(Bigram.Config(), vocab_size, layout)
            torch.nn.init.normal_(prior.table)
            return prior
        return make


def tiny_recipe(tokenizer: str = "char", prior: str = "gpt") -> dict:
    sizes = {"n_layer": 1, "n_head": 1, "n_embd": 16, "block_size": 16} if prior == "gpt" else {}
    return {
        "data": {"source": "text", "path": "${data_dir}/tinyshakespeare.txt"},
        "tokenizer": {"name": tokenizer},
        "prior": {"name": prior, **sizes},
        "train": {"max_steps": 30, "batch_size": 4, "seq_len": 16, "eval_every": 30,
                  "eval_batches": 2, "lr": 0.1, "warmup_steps": 0},
        "sample": {"n": 1, "max_new_tokens": 5},
    }


def test_pluggy_plugin_trains_from_a_recipe(fresh_plugins, tmp_path):
    fresh_plugins.register(ThirdPartyPlugin, name="third-party-test")
    assert fresh_plugins.registries.priors.entry("bigram").provider == "third-party-test"
    pipe = Pipeline.from_recipe(tiny_recipe(prior="bigram"))
    result = pipe.train(tmp_path / "run", progress=False)
    # 30 steps of lr 0.1 move a bigram table well below the uniform 6 bits/char over 65 chars
    assert result.steps == 30 and result.val.bits_per_unit < 5.5
    loaded = Pipeline.load(tmp_path / "run")
    assert isinstance(loaded.prior, Bigram)
    assert torch.equal(loaded.prior.table, pipe.prior.table)
    assert len(loaded.sample(2, max_new_tokens=7)[0]) == 7
    fresh_plugins.unregister(name="third-party-test")
    with pytest.raises(RegistryError, match="bigram"):
        fresh_plugins.registries.priors.get("bigram")


def test_layout_kind_mismatch_is_caught_before_training(fresh_plugins):
    fresh_plugins.register(ThirdPartyPlugin, name="third-party-test")
    recipe = {**tiny_recipe(prior="bigram"), "data": {"source": "sklearn_digits"},
              "tokenizer": {"name": "pixel", "levels": 17, "max_value": 16}}
    with pytest.raises(RecipeError, match="'bigram' models seq layouts but tokenizer 'pixel' produces grid"):
        Pipeline.from_recipe(recipe)


def test_a_plugin_cannot_take_a_builtin_name(fresh_plugins):
    """A built-in keeps its name (installing a plugin never breaks `gpt` for anyone); the
    plugin's registration is refused, naming the plugin and suggesting another name."""
    from priors.gpt import GPT

    class Clash:
        @staticmethod
        @hookimpl
        def tokar_register_priors(register):
            register("gpt", Bigram)

    fresh_plugins.register(Clash, name="clashing-plugin")
    regs = fresh_plugins.registries
    assert regs.priors.get("gpt") is GPT and regs.priors.entry("gpt").provider.startswith("tokar")
    assert any("prior 'gpt' from clashing-plugin is not registered: 'gpt' is a tokar built-in" in p
               and "another name, e.g. 'clashing_plugin_gpt'" in p for p in regs.problems), regs.problems


def test_a_builtin_takes_its_name_back_from_a_plugin_registered_first():
    reg = Registry("prior")
    reg.register("gpt", object, provider="early-plugin 1.0")
    with pytest.raises(RegistryError, match="'gpt' from early-plugin 1.0 is not registered"):
        reg.register("gpt", Bigram, provider="tokar 0.1.0", builtin=True)
    assert reg.get("gpt") is Bigram


def test_two_third_party_plugins_clashing_stay_ambiguous(fresh_plugins):
    def clash(name: str) -> type:
        class Clash:
            @staticmethod
            @hookimpl
            def tokar_register_priors(register):
                register("bigram2", Bigram)

        Clash.__name__ = name
        return Clash

    fresh_plugins.register(clash("A"), name="plugin-a")
    fresh_plugins.register(clash("B"), name="plugin-b")
    with pytest.raises(RegistryError, match=r"'bigram2' is registered twice: by plugin-a and by plugin-b"):
        fresh_plugins.registries.priors.get("bigram2")


def test_a_misspelled_hook_is_reported_with_the_nearest_name(fresh_plugins, capsys):
    from pipelines.cli.main import main

    class Typo:
        @staticmethod
        @hookimpl
        def tokar_register_prior(register):  # one s short: pluggy alone would never call it
            register("bigram_typo", Bigram)

        @staticmethod
        @hookimpl
        def tokar_register_heads(register):  # the plugin's other hooks still run
            pass

    fresh_plugins.register(Typo, name="typo-plugin")
    problems = fresh_plugins.registries.problems
    assert problems == ["tokar plugin typo-plugin implements 'tokar_register_prior', which is not a "
                        "tokar hook, so it is never called. Did you mean 'tokar_register_priors'?"]
    assert "gpt" in fresh_plugins.registries.priors
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "tokar_register_prior'" in out


def make_entry_point_package(root: Path) -> None:
    """A tiny installed distribution with a `tokar` entry point, discoverable by importlib.metadata
    when `root` is on sys.path (exactly what `pip install` leaves in site-packages)."""
    pkg = root / "tokar_hello"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(textwrap.dedent("""
        from plugins import hookimpl
        from tokenizers_ar.char import CharTokenizer

        class HelloChar(CharTokenizer):
            name = "hello_char"

        @hookimpl
        def tokar_register_tokenizers(register):
            register("hello_char", HelloChar)
    """))
    add_distribution(root, "tokar-hello", "1.2.3", "hello = tokar_hello.plugin")
    (root / "tokar_hello-1.2.3.dist-info" / "RECORD").write_text("")


def add_distribution(root: Path, name: str, version: str, entry_point: str) -> None:
    """The .dist-info of distribution `name` in `root`, with one `tokar` entry point."""
    dist = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[tokar]\n{entry_point}\n")


def run_tokar(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`tokar ARGS` in a fresh process with `site` (as pip would leave it) on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env,
                          capture_output=True, text=True, cwd=cwd)


def test_entry_point_plugin_is_listed_and_trains(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_entry_point_package(site)
    listed = run_tokar(site, tmp_path, "plugins")
    assert listed.returncode == 0, listed.stderr
    listing = listed.stdout
    line = next(l for l in listing.splitlines() if "hello_char" in l)
    assert "tokar-hello 1.2.3" in line

    recipe = tmp_path / "recipe.yaml"
    import yaml
    recipe.write_text(yaml.safe_dump(tiny_recipe("hello_char")))
    run = run_tokar(site, tmp_path, "-q", "train", str(recipe), "--run-dir", str(tmp_path / "run"),
                    "--no-progress")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("run")
    assert (tmp_path / "run" / "prior" / "model.safetensors").is_file()
    saved = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "name: hello_char" in saved


def test_registries_follow_registration(fresh_plugins):
    from plugins import get_registries

    before = get_registries()
    assert get_registries() is before  # cached while nothing changes
    fresh_plugins.register(ThirdPartyPlugin, name="third-party-test")
    assert "bigram" in get_registries().priors and "bigram" not in before.priors


class BanTokenPlugin:
    @staticmethod
    @hookimpl
    def tokar_register_logits_processors(register):
        def ban_token(token: int):
            return lambda logits, context: logits.index_fill(1, torch.tensor([token]), float("-inf"))

        register("ban_token", ban_token)


def test_a_plugin_logits_processor_composes_with_the_builtins(fresh_plugins, tmp_path):
    fresh_plugins.register(BanTokenPlugin, name="ban-plugin")
    assert "top_p" in fresh_plugins.registries.processors  # built-ins come through the same hook
    pipe = Pipeline.from_recipe(tiny_recipe())
    pipe.train(tmp_path / "run", progress=False)
    banned = pipe.tokenizer.encode("e").item()
    texts = pipe.sample(4, max_new_tokens=60, top_p=0.95,
                        processors=[{"name": "ban_token", "token": banned}])
    assert all("e" not in t for t in texts) and sum(len(t) for t in texts) == 240
    with pytest.raises(RegistryError, match="unknown logits processor 'ban_tokn'.*'ban_token'"):
        pipe.sample(1, processors=[{"name": "ban_tokn"}])


def test_a_broken_plugin_is_skipped_with_a_warning(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_entry_point_package(site)
    add_distribution(site, "tokar-broken", "0.0.1", "broken = no_such_module.plugin")
    proc = run_tokar(site, tmp_path, "plugins")
    assert proc.returncode == 0, proc.stderr
    assert "skipping tokar plugin 'broken' from tokar-broken 0.0.1: ModuleNotFoundError" in proc.stderr
    assert "hello_char" in proc.stdout and "gpt" in proc.stdout  # everything else still loads


class Sloppy:
    """A plugin that makes every registration mistake once, next to one good registration."""

    @staticmethod
    @hookimpl
    def tokar_register_priors(register):
        register("forty_two", 42)
        register("not_a_prior", CharTokenizer)  # a tokenizer class registered as a prior
        register("bigram_ok", Bigram)
        register("gpt", Bigram)  # clashes with the built-in
        register("lstm", Bigram)  # and another clash: every one is reported

    @staticmethod
    @hookimpl
    def tokar_register_tokenizers(register):
        class Half(CharTokenizer.__mro__[1]):  # the abstract Tokenizer base, nothing implemented
            name = "half"

        register("half", Half)


def test_registration_checks_what_it_is_given_and_reports_every_problem(fresh_plugins, capsys):
    from pipelines.cli.main import main

    fresh_plugins.register(Sloppy, name="sloppy-plugin")
    regs = fresh_plugins.registries
    problems = "\n".join(regs.problems)
    assert "prior 'forty_two' from sloppy-plugin is not registered: expected a subclass of " \
           "priors.Prior, got int" in problems
    assert "prior 'not_a_prior' from sloppy-plugin is not registered: expected a subclass of " \
           "priors.Prior, got CharTokenizer" in problems
    assert "tokenizer 'half' from sloppy-plugin is not registered: Half does not implement" in problems
    assert "prior 'gpt' from sloppy-plugin is not registered: 'gpt' is a tokar built-in" in problems
    assert "prior 'lstm' from sloppy-plugin is not registered: 'lstm' is a tokar built-in" in problems
    assert regs.priors.get("bigram_ok") is Bigram  # the good registration still works
    assert regs.priors.get("gpt") is not Bigram  # the built-in keeps its name
    assert main(["plugins"]) == 0  # never crashes on a bad plugin
    out = capsys.readouterr().out
    assert "bigram_ok" in out and "5 problem(s)" in out and "forty_two" in out


def test_a_plugin_that_exits_at_import_is_skipped_and_every_command_still_runs(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_entry_point_package(site)
    pkg = site / "tokar_quitter"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import sys\nsys.exit(0)\n")
    add_distribution(site, "tokar-quitter", "0.1", "quitter = tokar_quitter")
    proc = run_tokar(site, tmp_path, "plugins")
    assert proc.returncode == 0, proc.stderr
    assert "skipping tokar plugin 'quitter' from tokar-quitter 0.1: it called sys.exit(0)" in proc.stderr
    assert "hello_char" in proc.stdout and "gpt" in proc.stdout  # the command ran, and listed


class Peeker(Bigram):
    """A prior that sees the future: its prediction at t reads token t itself."""

    name = "peeker"

    def forward(self, ids, cond=None):
        return self.table[ids]


class PeekerPlugin:
    @staticmethod
    @hookimpl
    def tokar_register_priors(register):
        register("peeker", Peeker)


def test_train_refuses_a_prior_that_sees_the_future(fresh_plugins, tmp_path, capsys):
    import yaml

    from pipelines.cli.main import main

    fresh_plugins.register(PeekerPlugin, name="peeker-plugin")
    recipe = tmp_path / "peek.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(prior="peeker")))
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "prior 'peeker' sees the future: changing token 0 changed its prediction at position 0" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    fresh_plugins.register(ThirdPartyPlugin, name="third-party-test")  # a causal one trains
    assert main(["-q", "train", str(recipe).replace("peek", "peek"), "prior.name=bigram", "--run-dir",
                 str(tmp_path / "run2"), "--no-progress"]) == 0
