"""Images of every mode, written by Pillow as a user's files would be: transparency is composited
over the tokenizer's background (or refused), 16-bit grayscale is scaled to 8 bits, and errors
name the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.io.safe import read_image
from plugins.errors import TokenizerError
from tokenizers_ar import images
from tokenizers_ar.pixel import PixelTokenizer


def _saved(image: Image.Image, path, **kw) -> Image.Image:
    image.save(path, **kw)
    return read_image(path)


def _encode(image: Image.Image, **settings) -> np.ndarray:
    tok = PixelTokenizer(**settings)
    tok.fit([image])
    return tok.encode(image).numpy()


def test_half_transparent_red_on_white_is_what_compositing_gives(tmp_path):
    image = _saved(Image.new("RGBA", (2, 2), (255, 0, 0, 128)), tmp_path / "red.png")
    ids = _encode(image)
    # out = a * red + (1 - a) * white, a = 128/255: (255, 127, 127) as Pillow rounds it
    expected = np.asarray(Image.alpha_composite(Image.new("RGBA", (2, 2), (255, 255, 255, 255)),
                                                Image.new("RGBA", (2, 2), (255, 0, 0, 128))).convert("RGB"))
    assert ids.shape == (2, 2, 3)
    np.testing.assert_array_equal(ids, expected)
    assert ids[0, 0, 0] == 255 and 126 <= ids[0, 0, 1] <= 128  # not black (alpha dropped: 0)
    on_black = _encode(image, background="black")
    assert on_black[0, 0, 0] in (127, 128) and on_black[0, 0, 1] == 0
    on_blue = _encode(image, background=[0, 0, 255])
    assert on_blue[0, 0, 2] in (126, 127, 128) and on_blue[0, 0, 1] == 0


def test_transparent_icon_is_not_black(tmp_path):
    """The usual icon: transparent black around an opaque shape. Dropping alpha made it black."""
    icon = np.zeros((4, 4, 4), np.uint8)
    icon[1:3, 1:3] = (0, 0, 0, 255)  # an opaque black square in a transparent field
    image = _saved(Image.fromarray(icon, "RGBA"), tmp_path / "icon.png")
    ids = _encode(image)
    assert ids[0, 0].tolist() == [255, 255, 255] and ids[1, 1].tolist() == [0, 0, 0]


def test_la_is_grayscale_and_composited(tmp_path):
    la = np.zeros((3, 3, 2), np.uint8)
    la[..., 0], la[..., 1] = 0, 0  # fully transparent black
    la[0, 0] = (100, 255)
    image = _saved(Image.fromarray(la, "LA"), tmp_path / "la.png")
    assert image.mode == "LA"
    assert not images.is_colour(image)
    ids = _encode(image)
    assert ids.shape == (3, 3) and ids[0, 0] == 100 and ids[1, 1] == 255
    # a gray image on a coloured background becomes colour
    assert images.is_colour(image, background=(255, 0, 0))


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (3, 2), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.putpixel((0, 0), 0)
    image = _saved(p, tmp_path / "p.png", transparency=0)
    assert image.mode == "P" and "transparency" in image.info
    ids = _encode(image)
    assert ids[0, 0].tolist() == [255, 255, 255] and ids[0, 1].tolist() == [10, 200, 30]
    # a gray palette with transparency stays one channel
    g = Image.new("P", (2, 2), 1)
    g.putpalette([0, 0, 0, 50, 50, 50] + [0] * 762)
    g.putpixel((0, 0), 0)
    gray = _saved(g, tmp_path / "g.png", transparency=0)
    assert _encode(gray).tolist() == [[255, 50], [50, 50]]


def test_background_none_refuses_naming_the_file(tmp_path):
    image = _saved(Image.new("RGBA", (2, 2), (255, 0, 0, 10)), tmp_path / "see-through.png")
    tok = PixelTokenizer(background="none", height=2, width=2, channels=3)
    with pytest.raises(TokenizerError, match="see-through.png.*transparent.*tokenizer.background"):
        tok.encode(image)
    opaque = _saved(Image.new("RGBA", (2, 2), (255, 0, 0, 255)), tmp_path / "opaque.png")
    assert tok.encode(opaque)[0, 0].tolist() == [255, 0, 0]  # no transparency: nothing to refuse


def test_bad_background_is_a_config_error():
    with pytest.raises(ValueError):
        PixelTokenizer(background=[0, 0, 300])
    with pytest.raises(ValueError):
        PixelTokenizer(background="grey")


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_grayscale_scales_to_eight_bits(tmp_path, mode):
    values = np.array([[0, 257, 65535], [32768, 1000, 65280]], np.uint16)
    image = _saved(Image.fromarray(values), tmp_path / "deep.png")
    assert image.mode == "I;16"
    if mode == "I":
        image = image.convert("I")
    assert not images.is_colour(image)
    ids = _encode(image)
    np.testing.assert_array_equal(ids, np.rint(values / 257).astype(np.int64))
    assert ids.max() == 255 and ids[0, 1] == 1  # clipping (Pillow's convert('L')) would give 255


def test_wrong_size_names_the_file_and_both_sizes(tmp_path):
    tok = PixelTokenizer(height=4, width=4)
    tok.fit([Image.new("L", (4, 4))])
    odd = _saved(Image.new("L", (5, 3)), tmp_path / "odd.png")
    with pytest.raises(TokenizerError, match=r"odd.png.*5x3 given, 4x4 expected"):
        tok.encode(odd)


def test_float_image_is_refused():
    with pytest.raises(TokenizerError, match="floating-point"):
        images.flatten(Image.new("F", (2, 2)))


def test_default_background_keeps_older_fingerprints():
    """Files compressed with a run made before `background` existed still match its tokenizer:
    with the default, the fingerprint is the one tokar computed before (recorded from that
    version); a background that changes encoding changes it."""
    white = PixelTokenizer(height=2, width=2, channels=3)
    assert white.fingerprint() == "50bcecbe6c64804e"
    assert PixelTokenizer(levels=17, max_value=16, height=8, width=8, channels=1).fingerprint() \
        == "18b1d3baede3d8d6"
    black = PixelTokenizer(height=2, width=2, channels=3, background="black")
    assert black.fingerprint() != white.fingerprint()
