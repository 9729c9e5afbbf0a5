"""Training augmentation inside jit, per example, from a key: random crop after padding and a random
horizontal flip (the standard CIFAR recipe: torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip,
as OpenLTH's datasets/cifar10.py and the SynFlow code's Utils/load.py)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def crop_flip(rng, x, pad: int = 4, fill=0.0):
    """x: [B, H, W, C] → same shape; each example shifted by up to `pad` pixels and maybe flipped.
    `fill` (scalar or per channel) is what the padding holds: torchvision pads the raw image with 0,
    so after normalization that is the dataset's normalized zero (`Dataset.zero`), not 0."""
    b, h, w, c = x.shape
    k_crop, k_flip = jax.random.split(rng)
    fill = jnp.broadcast_to(jnp.asarray(fill, x.dtype).reshape(-1), (c,))
    padded = jnp.pad(x - fill, ((0, 0), (pad, pad), (pad, pad), (0, 0))) + fill
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,))

    def one(img, off, flip):
        out = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
        return jnp.where(flip, out[:, ::-1], out)

    return jax.vmap(one)(padded, offsets, flips)


AUGMENTATIONS = {"none": None, "crop_flip": crop_flip}


def make(name: str, zero=0.0):
    """The augmentation called `name` for a dataset whose raw 0 normalizes to `zero`."""
    fn = AUGMENTATIONS[name]
    return None if fn is None else functools.partial(fn, fill=zero)
