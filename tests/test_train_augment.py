"""Training-batch augmentation of the proxy trainer: random crop (reflect padding) and horizontal flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from memclean.errors import MemcleanError
from memclean.train import TrainConfig, crop_flip, random_crop_flip, train

CPU = torch.device("cpu")


def positions(n: int, h: int, w: int) -> torch.Tensor:
    """``n×2×h×w`` int64 images whose channels hold each pixel's own row and column."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([rows, cols])[None].repeat(n, 1, 1, 1)


def digits(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` of scikit-learn's 8×8 digits as ``n×1×8×8`` uint8."""
    d = load_digits()
    x = np.clip(d.images[:n] * 16, 0, 255).astype(np.uint8)[:, None]
    return x, d.target[:n]


def run(x: np.ndarray, y: np.ndarray, config: TrainConfig, device: torch.device = CPU) -> list[np.ndarray]:
    """Logits of every evaluation pass of one training run."""
    logits: list[np.ndarray] = []
    train(x, y, 10, config, device, callbacks=[lambda cp: logits.append(cp.logits.copy())])
    return logits


# --------------------------------------------------------------------------- the augmentation function


def test_crop_is_a_crop_of_the_reflect_padded_image_and_flip_mirrors_it():
    p = 2
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dy = torch.tensor([-2, -1, 0, 1, 2, 0])
    dx = torch.tensor([2, 0, -2, 1, -1, 0])
    mirror = torch.tensor([False, True, False, True, False, True])
    out = crop_flip(x, dy, dx, mirror)
    padded = F.pad(x.float(), (p, p, p, p), mode="reflect")
    for k in range(len(x)):
        crop = padded[k, :, p + dy[k] : p + dy[k] + 8, p + dx[k] : p + dx[k] + 8]
        expected = crop.flip(-1) if mirror[k] else crop
        assert torch.equal(out[k].float(), expected), k


def test_random_crop_shifts_content_by_at_most_p_with_offsets_per_sample():
    p, n = 2, 200
    x = positions(n, 8, 8)
    out = random_crop_flip(x, p, False, torch.Generator().manual_seed(0))
    assert ((out - x).abs() <= p).all()
    centre = out[:, :, 4, 4] - 4  # no reflection reaches the centre: its offset is the sample's shift
    assert (centre.abs() <= p).all()
    offsets = {tuple(o) for o in centre.tolist()}
    assert len(offsets) == (2 * p + 1) ** 2  # every offset drawn, so samples do not share one


def test_flip_mirrors_exactly_the_samples_the_mask_picks():
    x = torch.randn(5, 3, 4, 6)
    mirror = torch.tensor([True, False, False, True, False])
    zero = torch.zeros(5, dtype=torch.int64)
    out = crop_flip(x, zero, zero, mirror)
    assert torch.equal(out[mirror], x[mirror].flip(-1))
    assert torch.equal(out[~mirror], x[~mirror])

    x = positions(64, 5, 7)
    out = random_crop_flip(x, 0, True, torch.Generator().manual_seed(1))
    flipped = (out != x).flatten(1).any(1)
    assert torch.equal(out[flipped], x[flipped].flip(-1)) and torch.equal(out[~flipped], x[~flipped])
    assert 0 < int(flipped.sum()) < len(x)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.int64])
def test_shape_dtype_and_device_are_kept(dtype):
    x = torch.arange(4 * 3 * 6 * 10).reshape(4, 3, 6, 10).to(dtype)
    out = random_crop_flip(x, 3, True, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device


def test_off_returns_the_batch_and_draws_nothing():
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    x = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    assert random_crop_flip(x, 0, False, gen) is x
    assert torch.equal(gen.get_state(), state)


def test_same_generator_seed_gives_the_same_augmentation():
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    a = random_crop_flip(x, 2, True, torch.Generator().manual_seed(5))
    b = random_crop_flip(x, 2, True, torch.Generator().manual_seed(5))
    c = random_crop_flip(x, 2, True, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- the trainer


def test_augmentation_is_off_by_default_and_off_changes_nothing():
    defaults = TrainConfig()
    assert defaults.crop_padding == 0 and defaults.flip is False
    x, y = digits(200)
    base = dict(epochs=2, batch_size=32, width=8, seed=4)
    implicit = run(x, y, TrainConfig(**base))
    explicit = run(x, y, TrainConfig(**base, crop_padding=0, flip=False))
    assert len(implicit) == 2 and all(a.tobytes() == b.tobytes() for a, b in zip(implicit, explicit, strict=True))


def test_augmented_training_fits_digits_and_is_deterministic():
    x, y = digits(500)
    config = TrainConfig(epochs=10, batch_size=32, width=8, seed=1, crop_padding=1)
    first, again = run(x, y, config), run(x, y, config)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))
    assert (first[-1].argmax(1) == y).mean() >= 0.9
    plain = run(x, y, TrainConfig(epochs=10, batch_size=32, width=8, seed=1))
    assert not np.array_equal(first[-1], plain[-1])  # the augmentation did change training


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"crop_padding": -1}, r"score\.trainer\.crop_padding: .*greater than or equal to 0"),
        ({"crop_padding": "two"}, r"score\.trainer\.crop_padding: .*valid integer"),
        ({"crop_padding": 1.5}, r"score\.trainer\.crop_padding"),
        ({"flip": "sometimes"}, r"score\.trainer\.flip: .*valid boolean"),
    ],
)
def test_bad_values_are_one_line_errors(params, match):
    with pytest.raises(MemcleanError, match=match) as info:
        TrainConfig.from_params(params)
    assert "\n" not in str(info.value)


def test_crop_padding_above_half_the_side_is_refused():
    x, y = digits(20)
    assert TrainConfig.from_params({"crop_padding": 4, "flip": True}).crop_padding == 4
    with pytest.raises(MemcleanError, match=r"crop_padding: at most 4 .* 8×8 images \(got 5\)") as info:
        train(x, y, 10, TrainConfig(epochs=1, crop_padding=5), CPU)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_runs_the_same_augmentation_and_is_deterministic():
    cuda = torch.device("cuda")
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    on_cpu = random_crop_flip(x, 4, True, torch.Generator().manual_seed(2))
    on_cuda = random_crop_flip(x.to(cuda), 4, True, torch.Generator().manual_seed(2))
    assert on_cuda.device.type == "cuda" and torch.equal(on_cuda.cpu(), on_cpu)
    xs, ys = digits(300)
    config = TrainConfig(epochs=3, batch_size=32, width=8, crop_padding=1, flip=True)
    first, again = run(xs, ys, config, cuda), run(xs, ys, config, cuda)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))
