"""tokar's own components, registered through the same hooks a third-party plugin uses."""

from __future__ import annotations

from plugins.hookspecs import Register, hookimpl


@hookimpl
def tokar_register_tokenizers(register: Register) -> None:
    from tokenizers_ar.bpe import BPETokenizer
    from tokenizers_ar.char import CharTokenizer
    from tokenizers_ar.mulaw import MuLawTokenizer
    from tokenizers_ar.pixel import PixelTokenizer
    from tokenizers_ar.real import RealTokenizer, WaveformTokenizer
    from tokenizers_ar.vqgan import VQGANTokenizer
    from tokenizers_ar.vqvae import VQVAETokenizer

    register("bpe", BPETokenizer)
    register("char", CharTokenizer)
    register("mulaw", MuLawTokenizer)
    register("pixel", PixelTokenizer)
    register("real", RealTokenizer)
    register("waveform", WaveformTokenizer)
    register("vqvae", VQVAETokenizer)
    register("vqgan", VQGANTokenizer)


@hookimpl
def tokar_register_priors(register: Register) -> None:
    from priors.fvsbn import FVSBN
    from priors.gpt import GPT
    from priors.lstm import LSTM
    from priors.made import MADE
    from priors.nade import NADE
    from priors.ngram_lm import NGramLM
    from priors.pixelcnn import PixelCNN
    from priors.rnn import RNN
    from priors.wavenet import WaveNet

    register("gpt", GPT)
    register("lstm", LSTM)
    register("pixelcnn", PixelCNN)
    register("wavenet", WaveNet)
    register("fvsbn", FVSBN)
    register("nade", NADE)
    register("made", MADE)
    register("rnn", RNN)
    register("ngram_lm", NGramLM)


@hookimpl
def tokar_register_sources(register: Register) -> None:
    from pipelines.audio_sources import FSDDSource, HFAudioSource, WavFolderSource
    from pipelines.data import DigitsSource, HFSource, TextSource
    from pipelines.distill import TeacherSamplesSource
    from pipelines.image_sources import BinarizedMNISTSource, FashionMNISTSource
    from pipelines.table_sources import SklearnTableSource

    register("binarized_mnist", BinarizedMNISTSource)
    register("fsdd", FSDDSource)
    register("hf_audio", HFAudioSource)
    register("wav_folder", WavFolderSource)
    register("fashion_mnist", FashionMNISTSource)
    register("text", TextSource)
    register("hf", HFSource)
    register("sklearn_digits", DigitsSource)
    register("sklearn_table", SklearnTableSource)
    register("teacher_samples", TeacherSamplesSource)


@hookimpl
def tokar_register_logits_processors(register: Register) -> None:
    from priors.processors import BUILTIN_PROCESSORS

    for name, factory in BUILTIN_PROCESSORS.items():
        register(name, factory)


@hookimpl
def tokar_register_heads(register: Register) -> None:
    from priors.heads import BUILTIN_HEADS

    for name, head in BUILTIN_HEADS.items():
        register(name, head)
