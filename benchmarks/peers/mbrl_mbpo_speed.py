"""Wall-clock per environment step of mbrl-lib's own MBPO loop (PyTorch, CPU).

Runs INSIDE the mbrl venv (benchmarks/peers/setup.sh mbrl):

    benchmarks/peers/.venvs/mbrl/bin/python benchmarks/peers/mbrl_mbpo_speed.py \
        --preset inv_pendulum --steps 1250 --out inv.json

The configuration is composed from the yaml files that ship inside the installed ``mbrl``
package (``mbrl/examples/conf``): ``main.yaml`` top-level keys + ``algorithm/mbpo.yaml`` +
``dynamics_model/gaussian_mlp_ensemble.yaml`` + ``overrides/mbpo_<preset>.yaml``, exactly as
``python -m mbrl.examples.main algorithm=mbpo overrides=mbpo_<preset>`` composes it (Hydra's
compose API cannot be used directly because the wheel does not ship the ``action_optimizer``
group that main.yaml's default list names). Changes to the preset, all recorded in the JSON:

* ``device=cpu``;
* HalfCheetah uses the MuJoCo v4 env (the preset names the mujoco-py ``HalfCheetah-v2``);
* ``overrides.num_steps = --steps`` so the loop stops; ``algorithm.dataset_size`` is set to the
  preset's original ``num_steps`` so the real-data replay buffer has the capacity of a full run.

Everything that drives amortization (epoch length, model-train frequency, rollouts per step,
SAC updates per step, initial exploration, rollout schedule, patience, ...) is the preset's.

Measurement: ``mbrl.algorithms.mbpo.train`` is called unmodified; mbrl-lib functions are wrapped
(monkeypatched) to take timestamps. ``ms_per_env_step`` is measured over a window that starts at
the first model training (loop step ``freq_train_model - 1``; before it the SAC buffer is empty and
no SAC update runs) and spans a whole number of model-training periods, so it contains exactly
``k`` model trainings + model rollouts, ``10 x`` SAC updates for every step, and the evaluation
episodes that fall due in it. The initial exploration phase is timed separately.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import time
from collections import defaultdict

import mbrl
import mbrl.algorithms.mbpo as mbpo
import mbrl.models
import mbrl.third_party.pytorch_sac_pranz24.sac as pranz_sac
import mbrl.util
import mbrl.util.common
import numpy as np
import omegaconf
import torch

PRESETS = {
    "inv_pendulum": ("mbpo_inv_pendulum", "gym___InvertedPendulum-v4"),
    "halfcheetah": ("mbpo_halfcheetah", "gym___HalfCheetah-v4"),
}


def compose_cfg(preset: str, steps: int, seed: int, initial_exploration: int | None, model_epochs: int | None = None):
    conf_dir = pathlib.Path(mbrl.__file__).parent / "examples" / "conf"
    override_name, env_id = PRESETS[preset]
    main = omegaconf.OmegaConf.load(conf_dir / "main.yaml")
    main.pop("defaults", None)
    main.pop("hydra", None)
    cfg = omegaconf.OmegaConf.create(
        {
            **omegaconf.OmegaConf.to_container(main),
            "algorithm": omegaconf.OmegaConf.load(conf_dir / "algorithm" / "mbpo.yaml"),
            "dynamics_model": omegaconf.OmegaConf.load(
                conf_dir / "dynamics_model" / "gaussian_mlp_ensemble.yaml"
            ),
            "overrides": omegaconf.OmegaConf.load(conf_dir / "overrides" / f"{override_name}.yaml"),
        }
    )
    changes = {"device": ("main", cfg.device, "cpu")}
    # mbrl-lib 0.2.0 was written for Hydra 1.0.3, whose instantiate() is NOT recursive: the SAC
    # agent receives `action_space` as a DictConfig (low/high/shape; its `_target_: gym.env.Box`
    # names no real class and is never called) and GaussianMLP instantiates its own
    # `activation_fn_cfg`. Hydra >= 1.1 recurses by default, so restore 1.0 semantics on the two
    # nodes mbrl-lib instantiates.
    cfg.algorithm.agent._recursive_ = False
    cfg.dynamics_model._recursive_ = False
    changes["algorithm.agent._recursive_"] = ("Hydra 1.0 semantics", None, False)
    changes["dynamics_model._recursive_"] = ("Hydra 1.0 semantics", None, False)
    cfg.device = "cpu"
    cfg.seed = seed
    if cfg.overrides.env != env_id:
        changes["overrides.env"] = (override_name, cfg.overrides.env, env_id)
        cfg.overrides.env = env_id
    preset_num_steps = int(cfg.overrides.num_steps)
    epoch_len = int(cfg.overrides.epoch_length)
    if steps % epoch_len:
        new = -(-steps // epoch_len) * epoch_len
        print(f"note: mbpo.train runs whole epochs of {epoch_len} steps; --steps {steps} -> {new}")
        steps = new
    changes["overrides.num_steps"] = (override_name, preset_num_steps, steps)
    cfg.overrides.num_steps = steps
    changes["algorithm.dataset_size"] = ("unset -> overrides.num_steps", None, preset_num_steps)
    cfg.algorithm.dataset_size = preset_num_steps
    if initial_exploration is not None:
        changes["algorithm.initial_exploration_steps"] = (
            "mbpo.yaml",
            int(cfg.algorithm.initial_exploration_steps),
            initial_exploration,
        )
        cfg.algorithm.initial_exploration_steps = initial_exploration
    if model_epochs is not None:
        # a fixed number of model epochs per training (early stopping off), so that a side-by-side
        # comparison does the same model-training work in both libraries
        changes["overrides.num_epochs_train_model"] = (override_name, cfg.overrides.get("num_epochs_train_model"),
                                                       model_epochs)
        changes["overrides.patience"] = (override_name, cfg.overrides.get("patience"), 10**6)
        cfg.overrides.num_epochs_train_model = model_epochs
        cfg.overrides.patience = 10**6
    return cfg, changes, override_name


class Timers:
    def __init__(self):
        self.total = defaultdict(float)
        self.count = defaultdict(int)
        self.in_loop = defaultdict(list)  # (start, duration) for events inside the training loop

    def wrap(self, owner, name, key, record_events=False):
        fn = getattr(owner, name)
        timers = self

        def wrapped(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            dt = time.perf_counter() - t0
            timers.total[key] += dt
            timers.count[key] += 1
            if record_events:
                timers.in_loop[key].append((t0, dt))
            return out

        wrapped.__wrapped__ = fn
        setattr(owner, name, wrapped)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), required=True)
    p.add_argument("--steps", type=int, default=1250,
                   help="environment steps of the MBPO loop, rounded up to whole epochs of the preset "
                        "(epoch_length 250 for inv_pendulum, 1000 for halfcheetah)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument(
        "--initial-exploration",
        type=int,
        default=None,
        help="override algorithm.initial_exploration_steps (default: keep the preset's 5000)",
    )
    p.add_argument("--model-epochs", type=int, default=None,
                   help="fixed model-training epochs per training, early stopping off "
                        "(default: the preset's early stopping)")
    args = p.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cfg, changes, override_name = compose_cfg(args.preset, args.steps, args.seed, args.initial_exploration,
                                              args.model_epochs)
    ov, alg, dm = cfg.overrides, cfg.algorithm, cfg.dynamics_model
    freq = int(ov.freq_train_model)

    # ---- instrumentation (wrappers only; mbpo.train itself is untouched) ----
    timers = Timers()
    state = {"phase": "setup", "loop_step_t": [], "explore_t": [None, None]}
    common = mbrl.util.common

    orig_explore = common.rollout_agent_trajectories

    def explore(*a, **k):
        state["phase"] = "initial_exploration"
        state["explore_t"][0] = time.perf_counter()
        out = orig_explore(*a, **k)
        state["explore_t"][1] = time.perf_counter()
        state["phase"] = "loop"
        return out

    common.rollout_agent_trajectories = explore

    orig_step = common.step_env_and_add_to_buffer

    def step(*a, **k):
        t0 = time.perf_counter()
        if state["phase"] == "loop":
            state["loop_step_t"].append(t0)
        out = orig_step(*a, **k)
        if state["phase"] == "loop":
            timers.total["env_step_and_act"] += time.perf_counter() - t0
            timers.count["env_step_and_act"] += 1
        return out

    common.step_env_and_add_to_buffer = step

    timers.wrap(common, "train_model_and_save_model_and_data", "model_train_incl_save", True)
    timers.wrap(mbrl.models.ModelTrainer, "train", "model_train_only", True)
    timers.wrap(mbpo, "rollout_model_and_populate_sac_buffer", "model_rollouts", True)
    timers.wrap(pranz_sac.SAC, "update_parameters", "sac_update", True)
    timers.wrap(mbpo, "evaluate", "evaluation_episodes", True)
    timers.wrap(pranz_sac.SAC, "save_checkpoint", "sac_checkpoint_save", True)

    model_epochs = []
    orig_trainer_train = mbrl.models.ModelTrainer.train

    def trainer_train(self, *a, **k):
        out = orig_trainer_train(self, *a, **k)
        model_epochs.append(len(out[0]))
        return out

    mbrl.models.ModelTrainer.train = trainer_train

    # ---- env, as mbrl/examples/main.py (0.2.0) does it: handler from cfg.overrides.env ----
    handler = mbrl.util.create_handler(cfg)
    env, term_fn, _reward_fn = handler.make_env(cfg)
    test_env, *_ = handler.make_env(cfg)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    work_dir = tempfile.mkdtemp(prefix="mbrl_mbpo_speed_")
    t_start = time.perf_counter()
    best_reward = mbpo.train(env, test_env, term_fn, cfg, silent=False, work_dir=work_dir)
    t_end = time.perf_counter()

    T = state["loop_step_t"] + [t_end]
    n = len(T) - 1
    # mbpo.train only checks num_steps between epochs, so it runs whole epochs: n may exceed --steps.
    s = freq - 1
    k = (n - s) // freq
    if k < 1:
        raise SystemExit(f"--steps must be >= {s + freq} to contain one full model-training period")
    e = s + k * freq
    t0w, t1w = T[s], T[e]
    window_steps = e - s

    def in_window(key):
        return sum(dt for (t, dt) in timers.in_loop[key] if t0w <= t < t1w), sum(
            1 for (t, _) in timers.in_loop[key] if t0w <= t < t1w
        )

    breakdown = {}
    for key in ["model_train_incl_save", "model_train_only", "model_rollouts", "sac_update",
                "evaluation_episodes", "sac_checkpoint_save"]:
        tot, cnt = in_window(key)
        breakdown[key] = {"ms_per_env_step": 1e3 * tot / window_steps, "calls": cnt,
                          "ms_per_call": (1e3 * tot / cnt) if cnt else None}
    window_ms = 1e3 * (t1w - t0w) / window_steps
    accounted = sum(breakdown[k2]["ms_per_env_step"] for k2 in
                    ["model_train_incl_save", "model_rollouts", "sac_update", "evaluation_episodes"])
    breakdown["other_incl_env_step_and_act"] = {"ms_per_env_step": window_ms - accounted}
    eval_ms = breakdown["evaluation_episodes"]["ms_per_env_step"]

    explore_s = (state["explore_t"][1] - state["explore_t"][0]) if state["explore_t"][0] else None
    rollout_batch = int(ov.effective_model_rollouts_per_step) * freq
    trains_per_epoch = int(math.ceil(ov.epoch_length / freq))
    result = {
        "peer": "mbrl-lib",
        "algorithm": "MBPO (mbrl.algorithms.mbpo.train, unmodified)",
        "preset": override_name,
        "env_id": cfg.overrides.env.split("___")[1],
        "ms_per_env_step": window_ms,
        "ms_per_env_step_excluding_evaluation": window_ms - eval_ms,
        "measured_over": {
            "env_steps": window_steps,
            "loop_steps": [s, e],
            "model_trainings_in_window": breakdown["model_train_incl_save"]["calls"],
            "evaluations_in_window": breakdown["evaluation_episodes"]["calls"],
            "note": "window starts at the first model training (loop step freq_train_model-1) and "
                    "spans whole model-training periods",
        },
        "ms_per_env_step_whole_loop": 1e3 * (t_end - T[0]) / n,
        "loop_env_steps": n,
        "initial_exploration": {"steps": int(alg.initial_exploration_steps),
                                "seconds": explore_s,
                                "agent": "random" if alg.random_initial_explore else "SAC (sampled actions)"},
        "total_wall_seconds": t_end - t_start,
        "breakdown_in_window": breakdown,
        "model_training_epochs_per_training": model_epochs,
        "model_training_seconds_per_training": [dt for (_, dt) in timers.in_loop["model_train_only"]],
        "model_training_ms_per_epoch": 1e3 * sum(dt for (_, dt) in timers.in_loop["model_train_only"])
        / max(1, sum(model_epochs)),
        "model_training_note": "ModelTrainer.train runs until `patience` epochs without validation "
                               "improvement (num_epochs_train_model unset), so its cost per training "
                               "varies run to run; ms_per_epoch is the stable quantity",
        "counts_whole_run": dict(timers.count),
        "seconds_whole_run": dict(timers.total),
        "best_eval_reward": float(best_reward),
        "hyperparameters": {
            "sac_hidden_size": int(ov.sac_hidden_size),
            "sac_architecture": f"actor [obs]->{ov.sac_hidden_size}->{ov.sac_hidden_size}->(mean, log_std); "
                                f"2 critics [obs+act]->{ov.sac_hidden_size}->{ov.sac_hidden_size}->1, ReLU "
                                "(mbrl.third_party.pytorch_sac_pranz24)",
            "sac_batch_size": int(ov.sac_batch_size),
            "sac_updates_per_env_step": int(ov.num_sac_updates_per_step),
            "sac_updates_every_steps": int(ov.sac_updates_every_steps),
            "sac_lr": float(ov.sac_lr),
            "sac_gamma": float(ov.sac_gamma),
            "sac_tau": float(ov.sac_tau),
            "sac_alpha_init": float(ov.sac_alpha),
            "sac_automatic_entropy_tuning": bool(ov.sac_automatic_entropy_tuning),
            "sac_target_entropy": ov.sac_target_entropy,
            "sac_target_update_interval": int(ov.sac_target_update_interval),
            "sac_policy": ov.sac_policy,
            "sac_samples_action_in_rollouts": bool(alg.sac_samples_action),
            "effective_model_rollouts_per_step": int(ov.effective_model_rollouts_per_step),
            "model_rollout_batch_per_training": rollout_batch,
            "model_train_freq": freq,
            "epoch_length": int(ov.epoch_length),
            "rollout_length_schedule": list(ov.rollout_schedule),
            "rollout_length_schedule_meaning": "[min_epoch, max_epoch, min_length, max_length] linear",
            "sac_buffer_capacity_epoch0": int(ov.rollout_schedule[2]) * rollout_batch * trains_per_epoch
            * int(ov.num_epochs_to_retain_sac_buffer),
            "model_retain_epochs": int(ov.num_epochs_to_retain_sac_buffer),
            "real_data_ratio": float(alg.real_data_ratio),
            "ensemble_size": int(dm.ensemble_size),
            "num_elites": int(ov.num_elites),
            "model_hidden_size": int(dm.hid_size),
            "model_num_layers": int(dm.num_layers),
            "model_num_layers_meaning": "GaussianMLP: num_layers hidden layers of hid_size "
                                        "(input layer + num_layers-1 hidden) + mean/logvar output layer",
            "model_activation": dm.activation_fn_cfg._target_,
            "model_deterministic": bool(dm.deterministic),
            "model_learn_logvar_bounds": bool(dm.learn_logvar_bounds),
            "model_propagation_method": dm.propagation_method,
            "model_lr": float(ov.model_lr),
            "model_weight_decay": float(ov.model_wd),
            "model_batch_size": int(ov.model_batch_size),
            "validation_ratio": float(ov.validation_ratio),
            "patience": int(ov.patience),
            "num_epochs_train_model": ov.get("num_epochs_train_model", None),
            "normalize": bool(alg.normalize),
            "target_is_delta": bool(alg.target_is_delta),
            "learned_rewards": bool(alg.learned_rewards),
            "initial_exploration_steps": int(alg.initial_exploration_steps),
            "num_eval_episodes": int(alg.num_eval_episodes),
            "real_replay_buffer_capacity": int(alg.dataset_size),
            "term_fn": ov.term_fn,
        },
        "config_changes_from_preset": {k2: {"source": v[0], "preset": v[1], "used": v[2]}
                                       for k2, v in changes.items()},
        "full_config": omegaconf.OmegaConf.to_container(cfg, resolve=True),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "mbrl": mbrl.__version__,
            "gymnasium": __import__("gymnasium").__version__,
            "mujoco": __import__("mujoco").__version__,
            "numpy": np.__version__,
            "hydra": __import__("hydra").__version__,
            "omegaconf": omegaconf.__version__,
        },
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "device": cfg.device,
        "seed": cfg.seed,
        "work_dir": work_dir,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(json.dumps({k2: result[k2] for k2 in ["preset", "env_id", "ms_per_env_step",
                                                "ms_per_env_step_excluding_evaluation", "measured_over",
                                                "ms_per_env_step_whole_loop", "total_wall_seconds"]}, indent=2))
    for k2, v in breakdown.items():
        print(f"  {k2:32s} {v['ms_per_env_step']:9.2f} ms/step")


if __name__ == "__main__":
    main()
