"""MBPO's bounds and the rollout-length advisor (diagnostics/bounds.py), against hand computations; the
measures (TVs, KL) against exact values; the run-based commands end to end on a tiny Pendulum MBPO run."""

import json
import math
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax import cli
from mbrlax.algorithms import mbpo
from mbrlax.diagnostics import bounds as b


def test_branched_bound_equals_the_hand_computation():
    # 2·r_max·[γ^{k+1} ε_π/(1−γ)² + γ^k ε_π/(1−γ) + k ε_m'/(1−γ)] at ε_m'=0.02, ε_π=0.1, γ=0.9, k=3, r_max=1:
    # 2·[0.6561·0.1/0.01 + 0.729·0.1/0.1 + 3·0.02/0.1] = 2·[6.561 + 0.729 + 0.6] = 15.78
    assert b.branched_bound(0.02, 0.1, 0.9, 3, 1.0) == pytest.approx(15.78, rel=1e-12)
    # k = 0 has no model term: 2·[0.9·0.1/0.01 + 0.1/0.1] = 2·10 = 20
    assert b.branched_bound(0.5, 0.1, 0.9, 0, 1.0) == pytest.approx(20.0, rel=1e-12)
    # Theorem 4.1: 2γ r_max (ε_m + 2ε_π)/(1−γ)² + 4 r_max ε_π/(1−γ) at ε_m=0.02, ε_π=0.1, γ=0.9, r_max=2:
    # 3.6·0.22/0.01 + 0.8/0.1 = 79.2 + 8 = 87.2
    assert b.mbpo_bound(0.02, 0.1, 0.9, 2.0) == pytest.approx(87.2, rel=1e-12)


def test_advisor_picks_no_model_when_the_error_grows_fast_with_shift_and_k_positive_when_slowly():
    steep = b.advise(eps_m=0.01, slope=2.0, eps_pi=0.1, gamma=0.9, r_max=1.0)
    assert steep["k_best"] == steep["k_closed_form"] == 0
    flat = b.advise(eps_m=0.01, slope=0.01, eps_pi=0.1, gamma=0.9, r_max=1.0)
    # ε_m' = 0.011: k* = ⌈log(0.11)/log(0.9)⌉ = ⌈20.95⌉ = 21
    assert flat["eps_m_prime"] == pytest.approx(0.011)
    assert flat["k_best"] == flat["k_closed_form"] == 21
    assert flat["bound_by_k"][21] < flat["bound_by_k"][0]
    # the break-even slope is 1 − ε_m/ε_π = 0.9: just below it k* = 1, just above it 0
    assert flat["break_even_slope"] == pytest.approx(0.9)
    assert b.advise(0.01, 0.89, 0.1, 0.9, 1.0)["k_best"] == 1
    assert b.advise(0.01, 0.91, 0.1, 0.9, 1.0)["k_best"] == 0


def test_closed_form_k_equals_the_numerical_minimizer():
    rng = np.random.default_rng(0)
    for _ in range(200):
        eps_m, slope, eps_pi = rng.uniform(0, 0.2), rng.uniform(0, 1.5), rng.uniform(0.01, 1)
        gamma = rng.choice([0.5, 0.9, 0.99])
        a = b.advise(eps_m, slope, eps_pi, gamma, 1.0, k_max=400)
        assert a["k_best"] == a["k_closed_form"], (eps_m, slope, eps_pi, gamma)


def test_bounds_refuse_a_discount_of_one():
    with pytest.raises(ValueError, match="γ < 1"):
        b.branched_bound(0.1, 0.1, 1.0, 1, 1.0)


def test_equal_covariance_tv_and_policy_tv_match_exact_values():
    # 1-D: D_TV(N(0,1), N(δ,1)) = 2Φ(δ/2) − 1; check against a numerical ½∫|p − q|
    x = np.linspace(-12, 14, 200_001)
    for delta in (0.1, 1.0, 3.0):
        p, q = np.exp(-x**2 / 2), np.exp(-(x - delta) ** 2 / 2)
        numeric = 0.5 * np.trapezoid(np.abs(p - q), x) / np.sqrt(2 * np.pi)
        assert float(b.equal_covariance_tv(jnp.asarray(delta))) == pytest.approx(numeric, abs=1e-6)
    # the Monte Carlo policy TV: equal stds, shifts of 0.5σ in each of 2 dims -> δ = 0.5·√2
    mean_p, ls = jnp.zeros((4, 2)), jnp.full((4, 2), np.log(0.3))
    mean_q = mean_p + 0.15
    tv = b.gaussian_policy_tv(mean_p, ls, mean_q, ls, jax.random.key(0), samples=40_000)
    assert np.asarray(tv) == pytest.approx(2 * NormalDist().cdf(0.5 * math.sqrt(2) / 2) - 1, abs=0.01)
    assert np.asarray(b.gaussian_policy_tv(mean_p, ls, mean_p, ls, jax.random.key(0))) == pytest.approx(0.0)
    # KL of 1-D Gaussians: log(s_q/s_p) + (s_p² + Δ²)/(2 s_q²) − ½
    kl = b.gaussian_kl(jnp.zeros((1, 1)), jnp.log(jnp.full((1, 1), 0.5)), jnp.ones((1, 1)), jnp.zeros((1, 1)))
    assert float(kl[0]) == pytest.approx(math.log(2) + (0.25 + 1) / 2 - 0.5, rel=1e-6)


def test_fit_line_recovers_a_line():
    x = np.array([0.0, 0.1, 0.2, 0.4])
    f = b.fit_line(x, 0.3 + 0.05 * x)
    assert f["intercept"] == pytest.approx(0.3) and f["slope"] == pytest.approx(0.05) and f["slope_se"] < 1e-9


# ---- on a run ---------------------------------------------------------------------------------------

TINY = dict(
    env="Pendulum-v1", steps=80, init_steps=40, epoch_length=40, model_train_freq=40, rollout_batch_size=64,
    rollout_schedule=(0, 2, 1, 2), updates_per_step=2, eval_every=40, eval_episodes=1, sac_hidden=(32, 32),
    model_hidden=(32, 32), ensemble_size=3, num_elites=2, model_max_epochs=3, progress=False, tensorboard=False,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "mbpo"
    mbpo.train(mbpo.Config(**TINY, run_dir=str(run_dir)))
    return run_dir


def test_measure_run_on_a_tiny_mbpo_run(tiny_run):
    table, datasets, run = b.measure_run(tiny_run, snapshots=[0, 2, 8], env_steps=60, shift_states=50,
                                         rollout_batch=32, k_max=20)
    rows = table["rows"]
    assert [r["updates"] for r in rows] == [0, 2, 8]
    assert rows[0]["eps_pi"] == 0.0 and rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert rows[2]["eps_pi"] > 0 and all(0 <= r["eps_m_prime"] <= 1 for r in rows)
    assert [len(d.obs) for d in datasets] == [60, 60, 60]
    a = table["advice"]
    assert a["eps_m"] == rows[0]["eps_m_prime"] and a["eps_pi"] == rows[-1]["eps_pi"]
    assert a["k_best"] == a["k_closed_form"]
    # the run used k = rollout_length(schedule, its epoch): at step 80, epoch (80 − 40)//40 = 1 -> k = 1
    assert table["epoch"] == 1 and table["k_preset"] == mbpo.rollout_length(TINY["rollout_schedule"], 1) == 1
    with pytest.raises(ValueError, match="multiples of updates_per_step"):
        b.continue_training(run, [0, 3], jax.random.key(0))


def test_the_three_diagnose_commands_on_a_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "d"
    assert cli.main(["diagnose", "bounds", "--run", str(tiny_run), "--snapshots", "0", "4", "--env-steps", "40",
                     "--rollout-batch", "32", "--out", str(out / "bounds")]) == 0
    assert "advised k*" in capsys.readouterr().out
    assert cli.main(["diagnose", "calibration", "--run", str(tiny_run), "--env-steps", "40",
                     "--out", str(out / "cal")]) == 0
    cal = json.loads((out / "cal.json").read_text())
    assert cal["transitions"] == 40 and len(cal["mixture"]["coverage"]) == 5
    assert cli.main(["diagnose", "compounding", "--run", str(tiny_run), "--horizon", "10", "--starts", "4",
                     "--out", str(out / "comp")]) == 0
    comp = json.loads((out / "comp.json").read_text())
    assert comp["open_loop"]["horizons"] == [1, 2, 4, 8, 10]
    # both loops start from the same real state and take the same first action: equal one-step error
    assert comp["open_loop"]["state_error"][0] == pytest.approx(comp["closed_loop"]["state_error"][0], rel=1e-5)
    for name in ("bounds", "cal", "comp"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert cli.main(["diagnose", "bounds", "--eps-m", "0.01", "--slope", "0.01", "--eps-pi", "0.1", "--gamma",
                     "0.9", "--out", str(out / "numbers")]) == 0
    assert "advised k* = 21" in capsys.readouterr().out
    assert cli.main(["diagnose", "nonsense"]) == 2


def test_a_run_of_another_algorithm_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "run.json").write_text(json.dumps({"algorithm": "bptt"}))
    with pytest.raises(ValueError, match="need an MBPO run"):
        b.load_mbpo_run(tmp_path)
