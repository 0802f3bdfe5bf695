"""Which parts of a trained model keep learning after deployment, how often, with what optimizer.

A *learn group* is a set of parameters (or, for an in-context CMS level, its fast weights in the
recurrent state) with one chunk size C (tokens) and one optax transform. Every C streamed tokens
the group takes one optimizer step on the gradient of the next-token loss over that chunk.

Selectors (the same vocabulary as the sharding rules, `hope_jax.sharding.rules`):

  cms          every CMS level of the model, one group per level index (the default)
  cms<i>       CMS level i (fastest first), e.g. cms1
  <logical>    every parameter whose `logical_axes` contain that name (mlp, heads, embed, vocab …)
  re:<regex>   flat parameter names matching the regex (re.search)
  <glob>       flat parameter names matching the glob, e.g. blocks/*/mlp/*

Flat names are the trainer's and the checkpoints' (`blocks/0/mlp/levels/1/w_up/kernel`).
Own chunk of a CMS level: C for an in-context level (it writes every C tokens), P · T for an outer
level of period P (one outer step reads T tokens per sequence, D23). A group's chunk must be a
multiple of the own chunk of every level it touches.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Sequence
from typing import Any

import optax
from flax import nnx

from hope_jax.layers.cms import CMS
from hope_jax.sharding.rules import LOGICAL_AXIS_RULES
from hope_jax.train.state import ParamCodec

OPTIMIZERS = ("gd", "momentum", "adam", "adamw", "m3", "muon")


class LearnConfigError(ValueError):
    """A learn group that cannot be built (no match, bad chunk, no learnable level)."""


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """A requested group: `select` (selectors, see the module doc), optional chunk (tokens,
    default the group's own chunk), optimizer name or optax transform, learning rate.

    The defaults, Adam at 3e-4, are the measured choice (docs/continual.md, "Defaults"): on the
    tiny presets' domain stream plain GD at 1e-3 barely moves the levels, and Adam at 1e-3
    forgets as much as a Transformer++ does."""

    select: tuple[str, ...] = ("cms",)
    name: str | None = None
    chunk: int | dict | None = None
    optimizer: Any = "adam"
    lr: float = 3e-4


@dataclasses.dataclass(frozen=True)
class Group:
    """A resolved group: flat param names, in-context fast-weight slots (block, level), chunk."""

    name: str
    params: tuple[str, ...]
    states: tuple[tuple[int, int], ...]
    chunk: int
    own_chunk: int
    tx: optax.GradientTransformation


@dataclasses.dataclass(frozen=True)
class _Level:
    index: int
    block: int | None
    prefix: str
    in_context: bool
    own_chunk: int


def make_optimizer(name: Any, lr: float) -> optax.GradientTransformation:
    """`gd` (plain GD), `momentum` (β 0.9), `adam`, `adamw`, `m3`, `muon`, or an optax transform."""
    if isinstance(name, optax.GradientTransformation):
        return name
    from hope_jax import optim
    table = {"gd": lambda: optax.sgd(lr), "momentum": lambda: optax.sgd(lr, momentum=0.9),
             "adam": lambda: optax.adam(lr), "adamw": lambda: optax.adamw(lr),
             "m3": lambda: optim.m3(lr), "muon": lambda: optim.muon(lr)}
    if name not in table:
        raise LearnConfigError(f"unknown learn optimizer {name!r}; expected one of {OPTIMIZERS} "
                               "or an optax GradientTransformation")
    return table[name]()


def cms_levels(model: nnx.Module, seq_len: int) -> list[_Level]:
    """Every CMS level of the model with its flat-name prefix and own chunk (tokens)."""
    out = []
    for path, module in nnx.iter_modules(model):
        if not isinstance(module, CMS):
            continue
        path = tuple(path)
        block = path[1] if len(path) == 3 and path[0] == "blocks" and path[2] == "mlp" else None
        for i, lvl in enumerate(module.config.levels):
            prefix = "/".join(str(p) for p in path + ("levels", i)) + "/"
            own = lvl.chunk if lvl.in_context else lvl.period * seq_len
            out.append(_Level(i, block, prefix, lvl.in_context, own))
    return out


def _param_axes(model: nnx.Module) -> dict[str, tuple]:
    state = nnx.state(model, nnx.Param)
    codec = ParamCodec(state)
    leaves = codec.var_treedef.flatten_up_to(state)
    return {n: tuple(v.get_metadata().get("logical_axes") or ()) for n, v in
            zip(codec.names, leaves)}


def _match(selector: str, axes: dict[str, tuple]) -> list[str]:
    if selector in LOGICAL_AXIS_RULES:
        return [n for n, a in axes.items() if selector in a]
    if selector.startswith("re:"):
        pattern = re.compile(selector[3:])
        return [n for n in axes if pattern.search(n)]
    return [n for n in axes if fnmatch.fnmatchcase(n, selector)]


def _own_chunk(names: Sequence[str], levels: Sequence[_Level]) -> int:
    own = 1
    for lvl in levels:
        if any(n.startswith(lvl.prefix) for n in names):
            own = math.lcm(own, lvl.own_chunk)
    return own


def _check_chunk(name: str, chunk: int, own: int) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1 or chunk % own:
        raise LearnConfigError(f"learn group {name!r}: chunk {chunk!r} is not a positive "
                               f"multiple of the level's own chunk ({own} tokens)")


def _cms_groups(spec: GroupSpec, levels: list[_Level], names: Sequence[str]) -> list[Group]:
    """One group per CMS level index named by the selectors `cms` / `cms<i>`."""
    if not levels:
        raise LearnConfigError("the model has no learnable level (no CMS level): select "
                               "parameters by name instead, e.g. groups 'mlp' or "
                               "'blocks/*/mlp/*'")
    indices = sorted({lvl.index for lvl in levels})
    wanted = []
    for sel in spec.select:
        if sel == "cms":
            wanted += indices
        elif not sel[3:].isdigit() or int(sel[3:]) not in indices:
            raise LearnConfigError(f"learn selector {sel!r} matches no CMS level (levels: "
                                   f"{', '.join(f'cms{i}' for i in indices)})")
        else:
            wanted.append(int(sel[3:]))
    groups = []
    for i in dict.fromkeys(wanted):
        members = [lvl for lvl in levels if lvl.index == i]
        own = math.lcm(*(lvl.own_chunk for lvl in members))
        name = spec.name if spec.name and len(set(wanted)) == 1 else f"cms{i}"
        chunk = spec.chunk
        if isinstance(chunk, dict):  # per-level overrides {name: chunk}, None = every level
            chunk = chunk.get(name, chunk.get(None))
        chunk = own if chunk is None else chunk
        _check_chunk(name, chunk, own)
        if members[0].in_context and any(lvl.block is None for lvl in members):
            raise LearnConfigError(f"learn group {name!r}: in-context fast weights are learnable "
                                   "only in the MLP slot of unrolled decoder blocks")
        states = tuple((lvl.block, i) for lvl in members) if members[0].in_context else ()
        params = () if states else tuple(n for n in names
                                         if any(n.startswith(lvl.prefix) for lvl in members))
        groups.append(Group(name, params, states, chunk, own,
                            make_optimizer(_pick(spec.optimizer, name), spec.lr)))
    return groups


def _pick(optimizer: Any, name: str) -> Any:
    """A per-group optimizer from {name: optimizer, None: default} (or one for all)."""
    if isinstance(optimizer, dict):
        return optimizer.get(name, optimizer.get(None, "gd"))
    return optimizer


def resolve_groups(model: nnx.Module, specs: Sequence[GroupSpec], seq_len: int,
                   param_names: Sequence[str] | None = None) -> list[Group]:
    """The groups of `specs` on `model` (params of outer CMS levels are matched by prefix)."""
    levels = cms_levels(model, seq_len)
    axes = _param_axes(model)
    groups: list[Group] = []
    for k, spec in enumerate(specs):
        if isinstance(spec.select, str) or not spec.select:
            raise LearnConfigError(f"learn group {k}: select must be a non-empty tuple of strings")
        cms = [s.startswith("cms") and (s == "cms" or s[3:].isdigit()) for s in spec.select]
        if all(cms):
            groups += _cms_groups(spec, levels, list(axes))
            continue
        if any(cms):
            raise LearnConfigError(f"learn group {k}: do not mix cms selectors with others "
                                   f"({spec.select})")
        names: list[str] = []
        for sel in spec.select:
            found = _match(sel, axes)
            if not found:
                example = next(iter(axes), "")
                raise LearnConfigError(f"learn selector {sel!r} matches no parameter (parameter "
                                       f"names look like {example!r}; logical names: "
                                       f"{', '.join(LOGICAL_AXIS_RULES)})")
            names += found
        names = list(dict.fromkeys(names))
        name = spec.name or "+".join(spec.select)
        own = _own_chunk(names, levels)
        chunk = (math.lcm(own, seq_len) if spec.chunk is None else spec.chunk)
        _check_chunk(name, chunk, own)
        groups.append(Group(name, tuple(names), (), chunk, own,
                            make_optimizer(_pick(spec.optimizer, name), spec.lr)))
    _check_disjoint(groups)
    return groups


def _check_disjoint(groups: Sequence[Group]) -> None:
    seen: dict[Any, str] = {}
    for g in groups:
        for item in g.params + g.states:
            if item in seen:
                raise LearnConfigError(f"{item!r} is in two learn groups ({seen[item]!r}, "
                                       f"{g.name!r})")
            seen[item] = g.name
    if not groups:
        raise LearnConfigError("no learn group given")


def parse_groups(text: str, chunk: str = "", optimizer: str = "adam", lr: float = 3e-4
                 ) -> list[GroupSpec]:
    """CLI form: groups `"cms"` or `"NAME=SEL|SEL,SEL"` (comma = next group, | = union);
    chunk `"256"` (every group) or `"NAME=256,NAME=512"`; optimizer `"adam"` or
    `"cms0=gd,cms1=m3,adam"` (the unnamed one for the other groups)."""
    specs = []
    chunks = _parse_chunks(chunk)
    optimizers = _parse_map(optimizer or "gd", str)
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, _, sel = part.rpartition("=")
        select = tuple(s.strip() for s in sel.split("|") if s.strip())
        key = name or (select[0] if len(select) == 1 else None)
        c = chunks.get(key, chunks.get(None))
        if all(s.startswith("cms") for s in select):
            c = dict(chunks)  # cms expands to one group per level: cms1=256 picks one
        specs.append(GroupSpec(select=select, name=name or None, chunk=c, optimizer=optimizers,
                               lr=lr))
    return specs


def _parse_chunks(text: str) -> dict[str | None, int]:
    return _parse_map(text, int)


def _parse_map(text: str, kind: type) -> dict[str | None, Any]:
    """`"V"` or `"NAME=V,NAME=V,V"` → {NAME: V, None: V}."""
    out: dict[str | None, Any] = {}
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        name, _, value = part.rpartition("=")
        try:
            out[name or None] = kind(value)
        except ValueError:
            raise LearnConfigError(f"learn setting {part!r}: expected NAME={kind.__name__} or "
                                   f"{kind.__name__}") from None
    return out


__all__ = ["Group", "GroupSpec", "LearnConfigError", "OPTIMIZERS", "cms_levels",
           "make_optimizer", "parse_groups", "resolve_groups"]
