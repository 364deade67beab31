"""Why each model refit starts a fresh optimizer state: elite holdout MSE per epoch when refitting the model
of an MBPO run on that run's own replay buffer, (a) warm weights with the previous Adam state carried over,
(b) warm weights with a fresh Adam state (what `models.fit.fit` does), (c) from scratch.

    python benchmarks/model_refit.py [RUN_DIR]    # default: benchmarks/runs/pendulum-mbpo-s0 (mbpo_pendulum.py)

Writes benchmarks/results/model_refit.json and model_refit.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, machine, write_json  # noqa: E402

from mbrlax import runs  # noqa: E402
from mbrlax.algorithms import mbpo  # noqa: E402
from mbrlax.envs.make import make  # noqa: E402
from mbrlax.models.fit import fit  # noqa: E402
from mbrlax.types import Transition  # noqa: E402


def main() -> None:
    rd = Path(sys.argv[1]) if len(sys.argv) > 1 else RUNS / "pendulum-mbpo-s0"
    cfg = mbpo.resolve(mbpo.Config(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in runs.load_config(rd).items()}))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    env.close()
    model, _, _ = mbpo._components(cfg, spec.obs_dim, spec.act_dim)
    payload = runs.load_checkpoint(rd)
    fresh = model.init(jax.random.key(0))
    saved = runs.check_like("model", payload["model"], fresh)
    data = Transition(**payload["real"]["data"])
    epochs = 30

    def curve(state, reset_optimizer: bool) -> list[float]:
        log: list[float] = []
        fit(model, state, data, jax.random.key(5), max_epochs=epochs, patience=10**6,
            min_epoch_steps=cfg.model_min_epoch_steps, reset_optimizer=reset_optimizer,
            on_epoch=lambda e, cur: log.append(float(np.mean(np.sort(cur)[: model.num_elites]))))
        return log

    out = {"run": str(rd), "transitions": len(data.obs), "step": int(payload["t"]), "machine": machine(),
           "elite_holdout_mse_per_epoch": {
               "warm, Adam state carried over": curve(saved, reset_optimizer=False),
               "warm, fresh Adam state (mbrlax)": curve(saved, reset_optimizer=True),
               "from scratch": curve(fresh, reset_optimizer=True)}}
    write_json("model_refit.json", out)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, ys in out["elite_holdout_mse_per_epoch"].items():
        ax.semilogy(np.arange(1, len(ys) + 1), ys, lw=1.8, label=name)
    ax.set(xlabel=f"epoch (≥ {cfg.model_min_epoch_steps} minibatches)", ylabel="elite holdout MSE (normalized)",
           title=f"Refitting the {cfg.env} model on {len(data.obs)} transitions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "model_refit.png", dpi=110)
    print({k: (round(v[0], 4), round(v[-1], 4)) for k, v in out["elite_holdout_mse_per_epoch"].items()})


if __name__ == "__main__":
    main()
