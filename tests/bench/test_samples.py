"""Real rows at the deployment's input size: ``at_shapes`` resizes images the way torch does."""

from __future__ import annotations

import numpy as np
import pytest

from rtinfer.bench.samples import at_shapes


@pytest.mark.parametrize("size", [(224, 224), (40, 24), (16, 9)])
def test_images_are_resized_as_torch_interpolates(size: tuple[int, int]) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 32, 32), dtype=np.float32)
    mask = rng.random((2, 5)).astype(np.float32)
    feeds = [{"image": images, "other": mask}]
    out = at_shapes(feeds, {"image": (2, 3, *size)})
    want = torch.nn.functional.interpolate(torch.from_numpy(images), size=size,
                                           mode="bilinear", align_corners=False).numpy()
    assert out[0]["image"].shape == (2, 3, *size) and out[0]["image"].dtype == np.float32
    np.testing.assert_allclose(out[0]["image"], want, atol=1e-5)
    assert out[0]["other"] is mask                       # inputs not named are left as they are
    assert feeds[0]["image"] is images                   # the given feeds are not changed


def test_signals_and_volumes_resize_along_every_axis_after_the_channels() -> None:
    signal = np.linspace(0, 1, 8, dtype=np.float32).reshape(1, 1, 8)
    out = at_shapes([{"x": signal}], {"x": (1, 1, 16)})[0]["x"]
    assert out.shape == (1, 1, 16)
    assert out[0, 0, 0] == signal[0, 0, 0] and out[0, 0, -1] == signal[0, 0, -1]
    assert np.all(np.diff(out[0, 0]) >= 0)               # a ramp stays a ramp
    volume = np.ones((1, 2, 4, 4, 4), dtype=np.float64)
    out = at_shapes([{"v": volume}], {"v": (1, 2, 6, 5, 3)})[0]["v"]
    assert out.shape == (1, 2, 6, 5, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out, 1.0)


def test_what_cannot_be_resized_is_refused_with_why() -> None:
    feeds = [{"image": np.zeros((1, 3, 32, 32), np.float32),
              "ids": np.zeros((1, 12), np.int64)}]
    with pytest.raises(ValueError, match=r"does not take; its inputs are \['image', 'ids'\]"):
        at_shapes(feeds, {"img": (1, 3, 224, 224)})
    with pytest.raises(ValueError, match="only a float input of rank 3 to 5"):
        at_shapes(feeds, {"ids": (1, 128)})
    with pytest.raises(ValueError, match=r"keep the batch and channel axes \[1, 3\]"):
        at_shapes(feeds, {"image": (1, 1, 224, 224)})    # channels are not interpolated
    with pytest.raises(ValueError, match="give 4 positive sizes"):
        at_shapes(feeds, {"image": (1, 3, 224)})
    assert at_shapes(feeds, {"image": (1, 3, 32, 32)})[0]["image"].shape == (1, 3, 32, 32)
