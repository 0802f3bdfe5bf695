"""The linear path's hand-written derivatives and matmul-only kernels (`linear_chunk.py`).

The DGD system is inverted by blocked matmuls with a written-out derivative
(`coefficients.unit_lower_inverse`, a `custom_jvp`) and the decay products are taken in log form
(`coefficients.decay_matrix`); the chunk maps of a DGD level without momentum merge its gradient
and preconditioner terms. Checked here against `solve_triangular` / direct products, against
autodiff of the generic path (materialised per-token gradients, no shared code) in float64 to
1e-10, and against finite differences.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import solve_triangular

from hope_jax import core
from hope_jax.core.coefficients import decay_matrix, unit_lower_inverse, unit_lower_solve
from level_cases import OPTIMIZERS, gates_for, make_level, random_inputs


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("n", [1, 3, 16, 17, 64])
def test_unit_lower_inverse_matches_triangular_solve(x64, n):
    """Values, reverse- and forward-mode derivatives equal those of solve_triangular; entries on
    and above the diagonal are ignored (zero gradient)."""
    s = jax.random.normal(jax.random.PRNGKey(n), (2, n, n), jnp.float64) * 0.3
    eye = jnp.eye(n, dtype=s.dtype)

    def ref(s):
        return solve_triangular(eye + jnp.tril(s, -1), jnp.broadcast_to(eye, s.shape), lower=True,
                                unit_diagonal=True)

    w = jax.random.normal(jax.random.PRNGKey(7), s.shape, jnp.float64)
    loss = lambda f: lambda s: jnp.sum(jnp.sin(f(s)) * w)

    @jax.jit  # one compile for all six (eager, each op compiles on its own)
    def both(s):
        return [(f(s), jax.grad(loss(f))(s), jax.jvp(f, (s,), (w,))[1])
                for f in (unit_lower_inverse, ref)]

    (z, g, t), (z_ref, g_ref, t_ref) = both(s)
    assert _rel(z, z_ref) < 1e-12
    assert _rel(g, g_ref) < 1e-10
    assert float(jnp.max(jnp.abs(jnp.triu(g)))) == 0.0
    assert _rel(t, t_ref) < 1e-10


@pytest.mark.parametrize("n,widths", [(1, (3,)), (17, (5, 2)), (64, (8, 8, 3))])
def test_unit_lower_solve_matches_triangular_solve(x64, n, widths):
    """(I + S)⁻¹ B for several right-hand sides: values, reverse-mode derivatives w.r.t. S and
    every B, and forward-mode derivatives equal those of solve_triangular (S's entries on and
    above the diagonal are ignored)."""
    key = jax.random.PRNGKey(n)
    s = jax.random.normal(key, (2, n, n), jnp.float64) * (0.3 if n < 64 else 0.1)
    rhs = tuple(jax.random.normal(jax.random.fold_in(key, i), (2, n, m), jnp.float64)
                for i, m in enumerate(widths))
    eye = jnp.eye(n, dtype=s.dtype)

    def ref(s, rhs):
        return tuple(solve_triangular(eye + jnp.tril(s, -1), b, lower=True, unit_diagonal=True)
                     for b in rhs)

    ws = tuple(jax.random.normal(jax.random.fold_in(key, 100 + i), b.shape, jnp.float64)
               for i, b in enumerate(rhs))

    def loss(f):
        return lambda s, rhs: sum(jnp.sum(jnp.sin(z) * w) for z, w in zip(f(s, rhs), ws))

    tangents = (jax.random.normal(jax.random.fold_in(key, 999), s.shape, jnp.float64), ws)

    @jax.jit  # one compile for all six (eager, each op compiles on its own)
    def both(s, rhs):
        return [(f(s, rhs), jax.grad(loss(f), argnums=(0, 1))(s, rhs),
                 jax.jvp(f, (s, rhs), tangents)[1]) for f in (unit_lower_solve, ref)]

    (zs, g, t), (zs_ref, g_ref, t_ref) = both(s, rhs)
    for z, z_ref in zip(zs, zs_ref):
        assert _rel(z, z_ref) < 1e-12
    assert _rel(g[0], g_ref[0]) < 1e-10
    assert float(jnp.max(jnp.abs(jnp.triu(g[0])))) == 0.0
    for gb, gb_ref in zip(g[1], g_ref[1]):
        assert _rel(gb, gb_ref) < 1e-10
    for a, b in zip(t, t_ref):
        assert _rel(a, b) < 1e-10


def test_decay_matrix_products(x64):
    """P[t, s] = Π_{j=s+1}^{t} g_j exactly, including exact zeros; derivatives match the direct
    products' where the gates are non-zero."""
    c = 9
    g = jax.nn.sigmoid(jax.random.normal(jax.random.PRNGKey(0), (c,), jnp.float64))

    def direct(g):
        padded = jnp.concatenate([jnp.ones((1,), g.dtype), g])
        rows = []
        for t in range(c + 1):
            rows.append(jnp.stack([jnp.prod(padded[s + 1:t + 1]) if s <= t else 0.0 * padded[0]
                                   for s in range(c + 1)]))
        return jnp.stack(rows)

    # jitted: one compile each instead of ~200 eager op compiles of the unrolled products
    direct, jac, jac_direct = jax.jit(direct), jax.jit(jax.jacrev(decay_matrix)), \
        jax.jit(jax.jacrev(direct))
    assert _rel(decay_matrix(g), direct(g)) < 1e-14
    assert _rel(jac(g), jac_direct(g)) < 1e-13
    z = g.at[4].set(0.0)
    p = decay_matrix(z)
    assert _rel(p, direct(z)) < 1e-14
    assert float(p[6, 2]) == 0.0 and float(p[4, 2]) > 0 and float(p[6, 5]) > 0
    assert bool(jnp.all(jnp.isfinite(jac(z))))


CASES = [("matrix", "dot", "gdn"), ("matrix", "l2", "dgd_no_momentum"),
         ("residual_linear", "l2", "dgd_no_momentum"), ("matrix", "l2", "dgd")]


def _loss(level, params, x, gates, state=None):
    b = x["k"].shape[0]
    state = level.init_state(params, b) if state is None else state
    y, new = core.chunked_scan(level, state, x["q"], x["k"], x["v"], **gates)
    probe = jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))
    return jnp.sum(jnp.sin(y) * probe) + sum(jnp.sum(jnp.tanh(w)) for w in new.memory), new


@pytest.mark.parametrize("read", ["post", "pre", "snapshot"])
@pytest.mark.parametrize("gradient", ["full", "stop"])
@pytest.mark.parametrize("memory, objective, optimizer", CASES)
def test_linear_gradients_match_generic_autodiff(x64, memory, objective, optimizer, gradient, read):
    """Outer gradients of the linear path w.r.t. the initial memory, q, k, v and every gate equal
    autodiff of the generic path (float64, 1e-10), at an odd length that pads the last chunk."""
    b, t, h, d = 2, 11, 2, 4
    x = random_inputs(5, b, t, h, d, d)
    gates = gates_for(OPTIMIZERS[optimizer], x)
    kw = dict(chunk_size=4, read=read, gradient=gradient)
    lin = make_level(memory, objective, optimizer, method="linear", **kw)
    gen = make_level(memory, objective, optimizer, method="generic", **kw)
    params = lin.memory.init(jax.random.PRNGKey(3), h, d, d, jnp.float64)

    def grads(level):
        f = lambda p, q, k, v, g: _loss(level, p, dict(q=q, k=k, v=v), g)[0]
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4)))(
            params, x["q"], x["k"], x["v"], gates)

    got, want = grads(lin), grads(gen)
    for a, b_ in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert _rel(a, b_) < 1e-10


@pytest.mark.parametrize("memory, objective, optimizer", CASES[:2])
def test_linear_streaming_gradients(x64, memory, objective, optimizer):
    """A sequence split mid-chunk (state out of the first call, into the second): gradients w.r.t.
    the initial memory, the carried state's inputs and the gates equal the generic path's, and a
    directional derivative equals central finite differences."""
    b, t, h, d = 1, 10, 2, 3
    x = random_inputs(8, b, t, h, d, d)
    gates = gates_for(OPTIMIZERS[optimizer], x)
    levels = {m: make_level(memory, objective, optimizer, method=m, chunk_size=4)
              for m in ("linear", "generic")}
    params = levels["linear"].memory.init(jax.random.PRNGKey(4), h, d, d, jnp.float64)
    cut = 5

    def split(tree, lo, hi):
        return jax.tree.map(lambda a: a[:, lo:hi], tree)

    def total(level, args):
        xs = dict(q=x["q"], k=args["k"], v=args["v"])
        g = args["gates"]
        state = level.init_state(args["params"], b)
        state = state._replace(position=jnp.asarray(0, jnp.int32))  # streaming bookkeeping on
        l1, state = _loss(level, None, split(xs, 0, cut), split(g, 0, cut), state)
        l2, state = _loss(level, None, split(xs, cut, t), split(g, cut, t), state)
        return l1 + l2 + sum(jnp.sum(jnp.cos(s)) for s in state.snapshot)

    args = dict(params=params, k=x["k"], v=x["v"], gates=gates)
    got = jax.jit(jax.grad(lambda a: total(levels["linear"], a)))(args)
    want = jax.jit(jax.grad(lambda a: total(levels["generic"], a)))(args)
    for a, b_ in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert _rel(a, b_) < 1e-10
    rng = np.random.default_rng(1)
    u = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), args)
    eps = 1e-6
    f = jax.jit(lambda a: total(levels["linear"], a))
    numeric = (f(jax.tree.map(lambda a, v: a + eps * v, args, u))
               - f(jax.tree.map(lambda a, v: a - eps * v, args, u))) / (2 * eps)
    analytic = sum(jnp.sum(g * v) for g, v in zip(jax.tree.leaves(got), jax.tree.leaves(u)))
    assert abs(float(numeric - analytic)) <= 1e-6 * max(1.0, abs(float(numeric)))
