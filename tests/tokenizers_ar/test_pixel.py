import numpy as np
import pytest
import torch
from PIL import Image

from plugins.errors import TokenizerError
from tokenizers_ar import Layout, PixelTokenizer


def test_digits_17_levels_are_lossless():
    tok = PixelTokenizer(levels=17, max_value=16)
    img = np.arange(64).reshape(8, 8) % 17
    tok.fit([img])
    ids = tok.encode(img)
    assert tok.layout == Layout.grid(8, 8) and ids.shape == (8, 8)
    assert torch.equal(ids, torch.from_numpy(img))
    assert np.array_equal(tok.to_array(ids), img)
    decoded = tok.decode(ids)
    assert isinstance(decoded, Image.Image) and decoded.mode == "L" and decoded.size == (8, 8)
    assert np.asarray(decoded)[2, 0] == 255 and np.asarray(decoded)[0, 0] == 0  # 16 -> white
    assert torch.equal(tok.encode(decoded), ids)  # PIL round trip through 8-bit


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_quantizes_8bit_images(levels):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8))
    tok = PixelTokenizer(levels=levels)
    tok.fit([img])
    ids = tok.encode(img)
    assert ids.shape == (5, 7) and ids.max() < levels
    expected = np.rint(np.asarray(img).astype(np.float64) * (levels - 1) / 255)
    assert np.array_equal(ids.numpy(), expected)
    assert torch.equal(tok.encode(tok.decode(ids)), ids)


def test_binary_threshold():
    tok = PixelTokenizer(levels=2, height=1, width=4)
    img = Image.fromarray(np.array([[0, 127, 128, 255]], dtype=np.uint8))
    assert tok.encode(img).tolist() == [[0, 0, 1, 1]]


def test_bad_images_are_clear_errors():
    tok = PixelTokenizer(levels=17, max_value=16, height=8, width=8)
    with pytest.raises(TokenizerError, match=r"shape \(4, 4\), expected \(8, 8\)"):
        tok.encode(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(TokenizerError, match="max_value"):
        tok.encode(np.full((8, 8), 40))
    with pytest.raises(TokenizerError, match=r"\(H, W\) or \(H, W, 3\)"):
        tok.encode(np.zeros((8, 8, 4)))
    with pytest.raises(TokenizerError, match="expected \\(8, 8\\)"):
        tok.encode(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(TokenizerError, match="fit"):
        PixelTokenizer().encode(np.zeros((8, 8)))


def test_rgb_subpixels_in_raster_order_with_channels_innermost():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), mode="RGB")
    tok = PixelTokenizer()
    tok.fit([img])
    assert tok.layout == Layout.grid(3, 4, 3)
    ids = tok.encode(img)
    assert ids.shape == (3, 4, 3)
    flat = ids.reshape(-1)
    r, g, b = np.asarray(img)[0, 1]
    assert flat[3:6].tolist() == [r, g, b]  # pixel (0, 1): R, G, B after pixel (0, 0)
    back = tok.decode(flat)
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), np.asarray(img))
    assert tok.count_units(img) == 36


def test_image_modes():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    palette_gray = Image.fromarray(gray).convert("P")
    tok = PixelTokenizer()
    tok.fit([palette_gray])
    assert tok.layout == Layout.grid(3, 4)  # a gray palette image is grayscale
    colour = Image.fromarray(np.dstack([gray, gray[::-1], gray]).astype(np.uint8)).convert("P")
    tok = PixelTokenizer()
    tok.fit([colour])
    assert tok.layout == Layout.grid(3, 4, 3)
    tok = PixelTokenizer(height=3, width=4)  # size given: fit still learns the channels
    tok.fit([Image.fromarray(np.zeros((3, 4, 3), dtype=np.uint8))])
    assert tok.channels == 3
    # 32-bit integer images are read as 16-bit grayscale (how Pillow opens 16-bit PNGs); values
    # beyond 16 bits are refused rather than clipped (tests/tokenizers_ar/test_image_modes.py)
    with pytest.raises(TokenizerError, match="not 16-bit"):
        PixelTokenizer(height=3, width=4).encode(Image.fromarray(gray.astype(np.int32) * 1000))


def test_every_image_tokenizer_reads_a_gray_palette_as_one_channel():
    """One image reader (tokenizers_ar/images.py): pixel and the VQ tokenizers agree on a
    palette PNG whose palette is gray (the VQ-VAE used to read it as 3 channels)."""
    from tokenizers_ar import images

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    palette_gray = Image.fromarray(gray).convert("P")
    array, top = images.to_array(palette_gray, None, 255, "test")
    assert array.shape == (3, 4, 1) and top == 255
    np.testing.assert_array_equal(array[..., 0], gray)
    tok = PixelTokenizer()
    tok.fit([palette_gray])
    np.testing.assert_array_equal(tok.encode(palette_gray).numpy(), gray)
    colour = Image.fromarray(np.dstack([gray, gray[::-1], gray]).astype(np.uint8)).convert("P")
    assert images.to_array(colour, None, 255, "test")[0].shape == (3, 4, 3)
    with pytest.raises(TokenizerError, match="not 16-bit"):
        images.to_array(Image.fromarray(gray.astype(np.int32) * 1000), None, 255, "vqvae tokenizer")
