"""Continuous data end to end: raw waveforms through the `waveform` tokenizer into wavenet, gpt
and lstm with a mixture-of-Gaussians head (train, sample WAVs, score in bits per 16-bit sample),
and heads that do not fit the data refused before anything trains."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pipelines import Pipeline, load_recipe
from pipelines.cli.main import main
from plugins.errors import RecipeError
from tests.conftest import DATA_DIR, ROOT

RECIPE = ROOT / "recipes" / "debug" / "real_wavenet.yaml"
FSDD = DATA_DIR / "fsdd" / "recordings"


@pytest.mark.slow
@pytest.mark.parametrize("prior", [
    [],
    ["prior={name: gpt, n_layer: 1, n_head: 2, n_embd: 16, block_size: 128}"],
    ["prior={name: lstm, n_layer: 1, n_embd: 8, n_hidden: 16}"],
])
def test_a_mixture_head_on_the_raw_waveform(prior, tmp_path, capsys):
    head = ["prior.head={name: gaussian_mixture, n_mixtures: 3}", "prior.n_classes=10"]
    pipe = Pipeline.from_recipe(RECIPE, [*prior, *head, "train.max_steps=6", "train.eval_every=6"])
    result = pipe.train(tmp_path / "run", progress=False)
    # bits of the 16-bit quantized audio: about 11 to 14 for speech at a few steps
    assert result.val.unit == "sample" and 5 < result.val.bits_per_unit < 16
    wavs = sorted((tmp_path / "run" / "samples").glob("sample_*.wav"))
    assert len(wavs) == 2 and sf.info(wavs[0]).frames == 400
    wave, _ = sf.read(wavs[0])
    assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0

    loaded = Pipeline.load(tmp_path / "run")
    score = loaded.score([str(FSDD / "3_george_0.wav")], labels=[3])
    assert score.units == sf.info(FSDD / "3_george_0.wav").frames
    assert score.per_example[0].bits_per("sample") == pytest.approx(score.bits_per_unit)
    # discrete-only decoding options are one clear line, exit status 2
    assert main(["-q", "sample", str(tmp_path / "run"), "--top-p", "0.9", "--class", "1"]) == 2
    assert "only for discrete heads" in capsys.readouterr().err


@pytest.mark.parametrize("overrides,needle", [
    (["tokenizer.name=mulaw", "prior.head=gaussian"],
     "tokenizer 'mulaw' and head 'gaussian' do not fit: head 'gaussian' models real values"),
    (["prior.head=categorical"], "tokenizer 'waveform' and head 'categorical' do not fit"),
    (["tokenizer.name=mulaw", "prior.head=bernoulli"], "binary values, but the tokenizer has 256"),
    (["prior={name: pixelcnn}"], "layouts"),
])
def test_heads_that_do_not_fit_the_data_are_recipe_errors(overrides, needle):
    with pytest.raises(RecipeError, match=needle.replace("(", r"\(")):
        load_recipe(RECIPE, overrides)


def test_nan_in_continuous_data_names_the_example(tmp_path):
    from tokenizers_ar.real import WaveformTokenizer

    bad = tmp_path / "bad.wav"
    wave = np.zeros(800, dtype=np.float32)
    sf.write(bad, wave, 8000, subtype="FLOAT")
    data = sf.read(bad)[0]
    data[10] = np.nan
    sf.write(bad, data, 8000, subtype="FLOAT")
    tok = WaveformTokenizer(sample_rate=8000)
    with pytest.raises(Exception, match=r"bad\.wav holds NaN"):
        tok.fit([str(bad)])
