"""Checkpoints that cannot run code and survive a kill at any instant.

A checkpoint is a directory `checkpoints/<step>/` holding
    arrays.npz   every array of the payload (read with allow_pickle=False: no code can run on load)
    state.json   everything else (numbers, strings, nested dicts and lists), the format version, the step,
                 and the SHA-256 of arrays.npz; written last, so a directory with a valid state.json whose
                 hash matches is complete.
It is written into a temporary directory and renamed into place (one atomic rename); only then are
older checkpoints removed, keeping `keep` of them. Loading takes the newest complete checkpoint, so a
kill during a save, or a torn or corrupt newest checkpoint, falls back to the one before (with a warning).

Payloads are nested dicts / lists / tuples of Python scalars, NumPy or JAX arrays, typed PRNG keys and
other JAX pytrees (NamedTuples such as SACState, flax params). A pytree that is not a plain container is
stored as its list of leaves: `restore_like(loaded, reference)` rebuilds it with a fresh reference's
structure and checks every shape, so a checkpoint of a different configuration is a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

FORMAT = 2  # 1 was a pickle (checkpoint.pkl); `mbrlax checkpoint convert RUN` turns one into this format
DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt or made by a different config."""


class Leaves(list):
    """The leaves of a stored pytree, in `jax.tree.leaves` order; `restore_like` gives it its structure.
    A pytree itself (its leaves are the arrays), so `jax.tree.leaves` works on a loaded payload."""


jax.tree_util.register_pytree_node(Leaves, lambda x: (list(x), None), lambda _, xs: Leaves(xs))


# ---- encoding ------------------------------------------------------------------------------------


def _encode(x: Any, arrays: list[np.ndarray]) -> Any:
    def arr(a: Any) -> dict:
        arrays.append(np.asarray(a))
        return {"__array__": len(arrays) - 1}

    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, (np.generic,)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        arrays.append(np.asarray(jax.random.key_data(x)))
        return {"__key__": len(arrays) - 1, "impl": str(jax.random.key_impl(x))}
    if isinstance(x, (np.ndarray, jax.Array)):
        return arr(x)
    if isinstance(x, np.random.Generator):
        return {"__np_rng__": x.bit_generator.state}
    if type(x) is dict:
        if not all(isinstance(k, str) for k in x):
            raise TypeError(f"checkpoint dict keys must be strings, got {list(x)[:5]}")
        return {k: _encode(v, arrays) for k, v in x.items()}
    if type(x) is list:
        return [_encode(v, arrays) for v in x]
    if type(x) is tuple:
        return {"__tuple__": [_encode(v, arrays) for v in x]}
    leaves = jax.tree.leaves(x)  # any other pytree: NamedTuple states, flax FrozenDicts, optax states
    if len(leaves) == 1 and leaves[0] is x:
        raise TypeError(f"cannot store a {type(x).__name__} in a checkpoint (only data, never code)")
    return {"__leaves__": [_encode(v, arrays) for v in leaves]}


def _decode(x: Any, arrays: Any) -> Any:
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if not isinstance(x, dict):
        return x
    if "__array__" in x:
        return arrays[f"a{x['__array__']}"]
    if "__key__" in x:
        return jax.random.wrap_key_data(arrays[f"a{x['__key__']}"], impl=x["impl"])
    if "__np_rng__" in x:
        state = x["__np_rng__"]
        rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
        rng.bit_generator.state = state
        return rng
    if "__tuple__" in x:
        return tuple(_decode(v, arrays) for v in x["__tuple__"])
    if "__leaves__" in x:
        return Leaves(_decode(v, arrays) for v in x["__leaves__"])
    return {k: _decode(v, arrays) for k, v in x.items()}


def restore_like(name: str, loaded: Any, reference: Any) -> Any:
    """`loaded` (a stored pytree) rebuilt with the structure of `reference` (a freshly initialized one) as
    device arrays. A different number of leaves or any different shape is a `CheckpointError` naming it."""
    ref_leaves, treedef = jax.tree.flatten_with_path(reference)
    # Compare leaf lists: a stored pytree comes back as dicts, tuples and `Leaves` (a pytree node), whose
    # flattening gives the leaves in the reference's order, whatever containers they were stored in.
    got = jax.tree.leaves(loaded)
    if len(got) != len(ref_leaves):
        raise CheckpointError(f"checkpoint '{name}' has {len(got)} arrays, but this config needs {len(ref_leaves)}: "
                              f"it was made with different sizes (env or network).")
    for (path, ref), g in zip(ref_leaves, got):
        if np.shape(ref) != np.shape(g):
            raise CheckpointError(
                f"checkpoint '{name}{jax.tree_util.keystr(path)}' has shape {np.shape(g)}, but this config "
                f"needs {np.shape(ref)}: the checkpoint was made with different sizes (env or network).")
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(g, dtype=jax.numpy.asarray(r).dtype)
                                        for g, r in zip(got, (leaf for _, leaf in ref_leaves))])


# ---- files ---------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(run_dir: str | os.PathLike, step: int, payload: dict, keep: int = 2) -> Path:
    """Write `payload` as the checkpoint of `step` (crash-safe, see the module docstring); returns its dir."""
    root = Path(run_dir) / DIR
    root.mkdir(parents=True, exist_ok=True)
    arrays: list[np.ndarray] = []
    tree = _encode(payload, arrays)
    tmp = root / f".tmp-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with (tmp / "arrays.npz").open("wb") as fh:
        np.savez(fh, **{f"a{i}": a for i, a in enumerate(arrays)})  # type: ignore[arg-type]
        fh.flush()
        os.fsync(fh.fileno())
    meta = {"format": FORMAT, "step": int(step), "sha256": _sha256(tmp / "arrays.npz"), "tree": tree}
    with (tmp / "state.json").open("w") as fh:
        json.dump(meta, fh)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    final = root / f"{int(step):012d}"
    if final.exists():  # a second save at the same step: move the old one aside first
        old = root / f".old-{step}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    for stale in _complete_dirs(root)[keep:]:
        shutil.rmtree(stale, ignore_errors=True)
    for leftover in root.glob(".tmp-*"):  # from a save that was killed
        if leftover != tmp:
            shutil.rmtree(leftover, ignore_errors=True)
    return final


def _complete_dirs(root: Path) -> list[Path]:
    """Checkpoint directories, newest first (by step)."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name),
                  reverse=True)


def _read(path: Path) -> dict:
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / 'state.json'} is unreadable ({type(e).__name__}: {e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is of checkpoint format {meta.get('format')}, this mbrlax reads {FORMAT}")
    if _sha256(path / "arrays.npz") != meta["sha256"]:
        raise CheckpointError(f"{path / 'arrays.npz'} does not match its recorded SHA-256 (torn or altered)")
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / 'arrays.npz'} is unreadable ({type(e).__name__}: {e})") from e
    return _decode(meta["tree"], arrays)


def exists(run_dir: str | os.PathLike) -> bool:
    return bool(_complete_dirs(Path(run_dir) / DIR))


def load(run_dir: str | os.PathLike) -> dict:
    """The newest complete checkpoint of a run; a damaged newest one falls back to the one before."""
    run_dir = Path(run_dir)
    candidates = _complete_dirs(run_dir / DIR)
    if not candidates:
        if (run_dir / "checkpoint.pkl").exists():
            raise CheckpointError(
                f"{run_dir} has only an old pickle checkpoint (checkpoint.pkl), which can run code when loaded. "
                f"If you trust it, convert it: `mbrlax checkpoint convert {run_dir}`.")
        raise CheckpointError(f"no checkpoint in {run_dir}: the run stopped before its first checkpoint")
    errors = []
    for path in candidates:
        try:
            payload = _read(path)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            warnings.warn(f"skipped damaged checkpoint(s): {'; '.join(errors)}; resuming from {path}", stacklevel=2)
        return payload
    raise CheckpointError(f"every checkpoint in {run_dir / DIR} is damaged: {'; '.join(errors)}")


def convert_legacy(run_dir: str | os.PathLike, upgrade: Any = None) -> Path:
    """Turn a format-1 pickle checkpoint (checkpoint.pkl, from mbrlax before December 2026) into this format.
    Unpickling runs code from the file: do it only for runs you made or trust. The pickles are kept as
    checkpoint.pkl.converted. `upgrade(state) -> state` (the algorithm module's `upgrade_legacy`) maps the old
    layout to today's. Returns the new checkpoint directory."""
    import pickle

    run_dir = Path(run_dir)
    path = run_dir / "checkpoint.pkl"
    if not path.exists():
        raise CheckpointError(f"{run_dir} has no checkpoint.pkl to convert")
    with path.open("rb") as fh:
        old = pickle.load(fh)  # noqa: S301 - the explicit, documented conversion of a trusted file
    if not isinstance(old, dict) or old.get("format") != 1:
        raise CheckpointError(f"{path} is not an mbrlax format-1 checkpoint")
    old.pop("format")
    step = int(old.get("t", old.get("it", 0)))  # most loops count steps in "t", the local-model ones iterations
    config = old.get("config")
    state = upgrade(old) if upgrade is not None else old
    payload = {"state": state, "run": {"step": step, "metrics_bytes": None, "timers": {}, "legacy": True},
               "config": config}
    out = save(run_dir, step, payload)
    for name in ("checkpoint.pkl", "checkpoint.prev.pkl"):
        if (run_dir / name).exists():
            os.replace(run_dir / name, run_dir / f"{name}.converted")
    return out
