"""A tiny Transformer++ and a tiny Titans each overfit one fixed batch of real text bytes."""
import inspect
import textwrap

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hope_jax.models import Decoder, get_config

B, T = 4, 64


def _text_batch() -> jnp.ndarray:
    """B × (T+1) bytes of real English/Python text: the source of the stdlib `textwrap` module."""
    data = np.frombuffer(inspect.getsource(textwrap).encode("utf-8"), np.uint8)
    rows = [data[2000 + i * 700: 2000 + i * 700 + T + 1] for i in range(B)]
    return jnp.asarray(np.stack(rows).astype(np.int32))


def _loss(model, batch):
    logits = model(batch[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()


@nnx.jit
def _train_step(model, opt, batch):
    loss, grads = nnx.value_and_grad(_loss)(model, batch)
    opt.update(model, grads)
    return loss


# Titans at its preset step bound (eta_max = 0.1, unit-norm values; D19's eta_max = 1 diverges
# on this batch, docs/layers.md).


@pytest.mark.parametrize("arch, overrides, max_steps", [("transformer", {}, 150),
                                                        ("titans_lmm", {}, 60)])
def test_tiny_model_overfits_one_batch(arch, overrides, max_steps):
    model = Decoder(get_config(arch, "tiny", **overrides), rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    batch = _text_batch()
    first = float(_train_step(model, opt, batch))
    loss = first
    for _ in range(max_steps):
        loss = float(_train_step(model, opt, batch))
        assert np.isfinite(loss)
        if loss < first / 2:
            break
    assert loss < first / 2, f"{arch}: loss {first:.3f} → {loss:.3f} after {max_steps} steps"


def test_tiny_hope_overfits_one_batch():
    """Tiny Hope (self-modifying Titans + CMS) with the D31 outer recipe (clip 1.0, lr 3e-3 as
    D13a) halves its loss on one batch of real text within 40 steps, staying finite. One block
    (the compile is most of the cost; it halves by step 5, two blocks by step 4)."""
    model = Decoder(get_config("hope", "tiny", num_blocks=1), rngs=nnx.Rngs(0))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    batch = _text_batch()
    first = loss = float(_train_step(model, opt, batch))
    for _ in range(40):
        loss = float(_train_step(model, opt, batch))
        assert np.isfinite(loss)
        if loss < first / 2:
            break
    assert loss < first / 2, f"hope: loss {first:.3f} → {loss:.3f}"
