"""The PETS cart-pole swing-up: dynamics equal MuJoCo's on a model with the paper's constants, reward equals
PETS's cost by hand, and it runs as the Gymnasium id mbrlax/CartPoleSwingUp-v0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.envs import cartpole, jax_envs
from mbrlax.envs.make import make

# The physics of handful-of-trials' cartpole.xml (damping 1, gear 100, ctrlrange ±3, RK4 at 0.02 s, the two
# capsules), with the slider limit dropped and the pole straight down, as documented in envs/cartpole.py.
XML = """<mujoco><compiler inertiafromgeom="true"/>
<default><joint armature="0" damping="1" limited="false"/><geom contype="0"/>
<motor ctrlrange="-3 3" ctrllimited="true"/></default>
<option gravity="0 0 -9.81" integrator="RK4" timestep="0.02"/>
<worldbody><body name="cart"><joint axis="1 0 0" name="slider" type="slide"/>
<geom quat="0.707 0 0.707 0" size="0.1 0.1" type="capsule"/>
<body name="pole"><joint axis="0 1 0" name="hinge" type="hinge"/>
<geom fromto="0 0 0 0 0 -0.6" size="0.049 0.3" type="capsule"/></body></body></worldbody>
<actuator><motor gear="100" joint="slider"/></actuator></mujoco>"""


def test_dynamics_match_mujoco_rk4():
    mujoco = pytest.importorskip("mujoco")
    m = mujoco.MjModel.from_xml_string(XML)
    # the constants in envs/cartpole.py are what MuJoCo derives from the geoms
    np.testing.assert_allclose(m.body_mass[1:], [cartpole.CART_MASS, cartpole.POLE_MASS], rtol=1e-7)
    np.testing.assert_allclose(m.body_inertia[2, 1], cartpole.POLE_INERTIA, rtol=1e-6)
    d = mujoco.MjData(m)
    env = cartpole.CartPoleSwingUp()
    state = np.array([0.1, 2.5, -0.3, 1.0])
    d.qpos[:], d.qvel[:] = state[:2], state[2:]
    rng = np.random.default_rng(0)
    step = jax.jit(env.dynamics)
    s = jnp.asarray(state, jnp.float32)
    for _ in range(25):
        a = rng.uniform(-1, 1, 1)
        d.ctrl[:] = 3.0 * a
        mujoco.mj_step(m, d, nstep=2)  # frame skip 2
        s = step(s, jnp.asarray(a, jnp.float32))
        np.testing.assert_allclose(np.asarray(s), np.concatenate([d.qpos, d.qvel]), atol=2e-3, rtol=1e-3)


def test_reward_is_pets_cost_by_hand():
    env = cartpole.CartPoleSwingUp()
    # upright at the origin, no action: tip at (0, 0.6), reward exactly 1
    up = env.observe(jnp.array([0.0, jnp.pi, 0.0, 0.0]))
    assert float(env.reward(up, jnp.zeros(1), up)) == pytest.approx(1.0, abs=1e-6)
    # hanging down at x = 0.3 with action 0.5 (u = 1.5): tip (0.3, -0.6), dist² = 0.09 + 1.44
    down = env.observe(jnp.array([0.3, 0.0, 0.0, 0.0]))
    expect = np.exp(-(0.09 + 1.44) / 0.36) - 0.01 * 1.5**2
    assert float(env.reward(down, jnp.array([0.5]), down)) == pytest.approx(expect, rel=1e-5)
    # the reward is computed on next_obs (after the step), as in PETS
    assert float(env.reward(down, jnp.zeros(1), up)) == pytest.approx(1.0, abs=1e-6)


def test_gymnasium_id_starts_near_hanging_and_runs_200_steps():
    env, spec = make("mbrlax/CartPoleSwingUp-v0")
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (5, 1, 200)
    obs, _ = env.reset(seed=0)
    assert obs[1] > 0.9  # cos θ ≈ 1: hanging down
    n, done = 0, False
    while not done:
        obs, r, term, trunc, _ = env.step(np.zeros(1, np.float32))
        n += 1
        done = term or trunc
    assert n == 200 and not term
    assert isinstance(jax_envs.load("mbrlax/CartPoleSwingUp-v0"), cartpole.CartPoleSwingUp)
