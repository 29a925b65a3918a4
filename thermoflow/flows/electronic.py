"""Deep variational free energy of classical protons and quantum electrons (dense hydrogen), Hartree atomic units.

N protons at positions X (N, 3) bohr in a periodic cell of volume Omega, distributed as the flow's
density p(X) (:mod:`thermoflow.flows.periodic`; on a uniform base, or on the Boltzmann density of a base
potential such as a machine-learned hydrogen potential, ln Z_b by annealed importance sampling as in
:mod:`thermoflow.flows.classical`: the base carries the packing, the flow the correction), each configuration carrying the
electrons' ground state in the Born-Oppenheimer sense, approximated by a trial wavefunction psi_X
conditioned on the protons (:mod:`thermoflow.electrons.network`). The variational free energy

    F[p, psi] = E_{X ~ p}[ k_B T ln p(X) + E(X) ] + k_B T ( 3N ln lambda + ln N! )  >=  F,

    E(X) = <psi_X| H(X) |psi_X> / <psi_X|psi_X>  >=  E_0(X),

is an upper bound twice over (Gibbs-Bogoliubov for the protons, the variational principle for the
electrons). The constant term is that of classical protons (:func:`thermoflow.flows.classical.ideal_constant`,
here with lambda in bohr): the momentum integral, the thermal de Broglie wavelength lambda = sqrt(2 pi
hbar^2 / (m_p k_B T)), and ln N! for identical protons. Derived outputs: E = (3/2) N k_B T + <E(X)>,
S = (E - F) / T, and the virial pressure P = N k_B T / Omega + <(2 T_e + V) / (3 Omega)>_X (electrons'
kinetic energy T_e; V the full Coulomb energy, protons included; :mod:`thermoflow.electrons.estimators`).

Gradients, at every step on B proton walkers (Metropolis on p), each carrying W electron walkers
(Metropolis on |psi_X|^2, moved after the protons moved, as in the published code):

* flow parameters: the score-function estimator E_p[(f(X) - b) grad ln p(X)] with f = k_B T ln p + E_W(X),
  E_W(X) the walker mean of Re E_loc over that configuration's electrons (an unbiased estimate of E(X),
  so the gradient stays unbiased), b the batch mean; f clipped for the gradient only;
* wavefunction parameters: grad F = E_X[grad E(X)], the mean over the proton walkers of the VMC gradient
  of each configuration (:func:`thermoflow.electrons.driver.make_wavefunction_update`, Adam or minSR).

Twist averaging: E(X) = sum_t w_t E_t(X) over a set of twists with weights w_t, each twist with its own
wavefunction (parameters, optimiser state, electron walkers): the twist-averaged boundary conditions of
the published method reduce the open-shell finite-size error of E(X) (60 mHa per electron at the Gamma
point for 16 protons at r_s = 1.25, docs/results/hydrogen_electrons.md).

References: H. Xie, Z.-H. Li, H. Wang, L. Zhang and L. Wang, Phys. Rev. Lett. 131, 126501 (2023),
arXiv:2209.06095 (the method); R. P. Feynman, Statistical Mechanics (1972), ch. 3; W. M. C. Foulkes et
al., Rev. Mod. Phys. 73, 33 (2001), doi:10.1103/RevModPhys.73.33 (VMC, virial pressure);
C. Lin, F. H. Zong and D. M. Ceperley, Phys. Rev. E 64, 016702 (2001), doi:10.1103/PhysRevE.64.016702
(twist averaging).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thermoflow.electrons import mcmc
from thermoflow.electrons.driver import STEP_SIZE_BOUNDS as ELECTRON_STEP_BOUNDS
from thermoflow.electrons.driver import make_wavefunction_update
from thermoflow.electrons.vmc import CLIP_WIDTH
from thermoflow.flows.classical import STEP_SIZE_BOUNDS, ideal_constant, lipschitz_penalty, make_base_correction
from thermoflow.flows.periodic import PeriodicFlow
from thermoflow.flows.sampling import Walkers, init_walkers, make_metropolis_block
from thermoflow.optimize import clip_to_median
from thermoflow.potentials.base import EnergyFn
from thermoflow.units import BOHR_A, EV_PER_HARTREE, KB_EV_PER_K


@dataclasses.dataclass(frozen=True)
class Wavefunction:
    """One twist's trial wavefunction: ``log_psi(params, electrons (n_e, 3), protons (n_p, 3)) -> (sign or phase,
    ln|psi|)`` and ``local_energy(params, electrons, protons) -> LocalEnergy`` (Hartree), both bohr."""

    log_psi: Callable
    local_energy: Callable


@dataclasses.dataclass(frozen=True)
class ElectronicFreeEnergy:
    """The model of the module docstring.

    Attributes:
        flow: the protons' :class:`PeriodicFlow` (cell in bohr).
        wavefunctions: one :class:`Wavefunction` per twist.
        twist_weights: (n_t,) weights summing to one.
        n_electrons: electrons per cell.
        kT_Ha: thermal energy, Hartree.
        constant_Ha: k_B T (3N ln lambda + ln N!) with lambda in bohr, Hartree.
        with_base: ``(params, X, ln p on the uniform base) -> ln p`` (:func:`thermoflow.flows.classical.make_base_correction`,
            bohr and Hartree): the identity for the uniform base.
    """

    flow: PeriodicFlow
    wavefunctions: tuple[Wavefunction, ...]
    twist_weights: np.ndarray
    n_electrons: int
    kT_Ha: float
    constant_Ha: float
    with_base: Callable = lambda params, x, log_p: log_p

    @property
    def n_protons(self) -> int:
        return self.flow.n_particles

    def log_density(self, params, protons):
        """ln p(X) of one configuration (N, 3) bohr (the sign of the flow's Jacobian dropped: see :meth:`log_density_sign`)."""
        return self.with_base(params, protons, self.flow.log_density(params, protons)[1])

    def log_density_and_norm(self, params, protons):
        """``(sign of the flow's Jacobian, ln p(X), spectral norm of dg/dX)`` of one configuration."""
        sign, log_p, norm = self.flow.log_density_and_norm(params, protons)
        return sign, self.with_base(params, protons, log_p), norm

    def log_density_sign(self, params, protons):
        return self.flow.log_density(params, protons)[0]


def make_electronic_free_energy(flow: PeriodicFlow, wavefunctions: Sequence[Wavefunction], *, n_electrons: int, temperature_K: float,
                                mass_amu: float, twist_weights: Sequence[float] | None = None, base_energy_fn: EnergyFn | None = None,
                                base_log_partition_A: float | None = None) -> ElectronicFreeEnergy:
    """The model of the module docstring.

    Args:
        flow: :func:`thermoflow.flows.periodic.make_periodic_flow` of the cell in bohr, N protons.
        wavefunctions: one per twist (the same cell, N protons, ``n_electrons`` electrons).
        n_electrons: electrons per cell.
        temperature_K: T.
        mass_amu: proton mass (amu).
        twist_weights: (n_t,) non-negative twist weights (normalised here); None: equal weights.
        base_energy_fn: the flow's base is the Boltzmann density of this potential at T (a thermoflow energy function:
            ``(positions (N, 3) A, cell (3, 3) A) -> eV``, e.g. a Deep Potential of hydrogen); None: uniform base.
        base_log_partition_A: ln Z_b = ln of the integral of exp(-U_b / k_B T) over the cell^N with lengths in Angstrom
            (:func:`thermoflow.flows.ais.annealed_importance_sampling`), required with ``base_energy_fn``; converted here
            to bohr (ln Z_b - 3N ln(bohr / A)).

    Raises:
        ValueError: no wavefunction, mismatched or non-positive twist weights, non-positive temperature or mass, a base
            potential without its ln Z_b (or the reverse).
    """
    if not wavefunctions:
        raise ValueError("the electronic free energy needs at least one wavefunction (one per twist)")
    weights = np.ones(len(wavefunctions)) if twist_weights is None else np.asarray(twist_weights, dtype=np.float64)
    if weights.shape != (len(wavefunctions),) or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"twist_weights must be {len(wavefunctions)} non-negative numbers with a positive sum, got {twist_weights}")
    kT_Ha = KB_EV_PER_K * temperature_K / EV_PER_HARTREE
    # ideal_constant is k_B T (3N ln lambda + ln N!) with lambda in Angstrom: lambda in bohr shifts it by -3N k_B T ln(bohr/A)
    n = flow.n_particles
    constant_eV = ideal_constant(n, mass_amu, temperature_K) - KB_EV_PER_K * temperature_K * 3 * n * math.log(BOHR_A)
    base_ha = None if base_energy_fn is None else (lambda z, cell: base_energy_fn(z * BOHR_A, cell * BOHR_A) / EV_PER_HARTREE)
    log_z_bohr = None if base_log_partition_A is None else base_log_partition_A - 3 * n * math.log(BOHR_A)
    return ElectronicFreeEnergy(flow=flow, wavefunctions=tuple(wavefunctions), twist_weights=weights / weights.sum(),
                                n_electrons=n_electrons, kT_Ha=kT_Ha, constant_Ha=constant_eV / EV_PER_HARTREE,
                                with_base=make_base_correction(flow, kT_Ha, base_ha, log_z_bohr))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class JointState:
    """Everything a joint training step reads and writes (one pytree, checkpointed whole).

    Attributes:
        flow_params, flow_opt_state: the flow and its Adam state.
        wavefunction_params, wavefunction_opt_state: tuples, one entry per twist (``()`` states for minSR).
        protons: (B, N, 3) proton walkers, bohr.
        electrons: (n_t, B, W, n_e, 3) electron walkers per twist and proton walker, bohr.
        proton_step_size: scalar, bohr.
        electron_step_size: (n_t,) bohr.
        step: index of the next step; step t draws its randomness from ``fold_in(key, t)``.
        key: the run's base key.
        lr_scale: multiplies all updates (halved by each rollback of :func:`thermoflow.optimize.optimise`).
    """

    flow_params: Any
    flow_opt_state: Any
    wavefunction_params: Any
    wavefunction_opt_state: Any
    protons: jax.Array
    electrons: jax.Array
    proton_step_size: jax.Array
    electron_step_size: jax.Array
    step: jax.Array
    key: jax.Array
    lr_scale: jax.Array


def _flat(electrons: jax.Array, protons: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Electron walkers (B, W, n_e, 3) of B proton configurations (B, N, 3) as one flat batch: (B W, n_e, 3) and each
    walker's own protons (B W, N, 3): one Metropolis block and one batch of local energies for all configurations
    (the joint step at the published settings: 15.69 s against 16.09 s with nested per-configuration batches, within
    this machine's noise)."""
    b, w = electrons.shape[:2]
    return electrons.reshape(b * w, *electrons.shape[2:]), jnp.repeat(protons, w, axis=0)


def _move_electrons(wf: Wavefunction, electron_block: Callable, params, electrons: jax.Array, protons: jax.Array, key: jax.Array,
                    step_size) -> tuple[mcmc.WalkerState, jax.Array, jax.Array]:
    """One Metropolis block of one twist's electron walkers (B, W, n_e, 3) at the proton configurations (B, N, 3), as one
    flat batch: ``(moved walkers (B W, ...), acceptance, each walker's protons (B W, N, 3))``."""
    flat_x, flat_r = _flat(electrons, protons)
    log_abs = jax.vmap(lambda x, r: wf.log_psi(params, x, r)[1])(flat_x, flat_r)
    moved, acceptance = electron_block(mcmc.WalkerState(flat_x, log_abs, key), params, flat_r, step_size)
    return moved, acceptance, flat_r


def _walker_map(fn: Callable, electrons: jax.Array, protons: jax.Array, chunk_size: int | None):
    """``fn(electrons (n_e, 3), protons (N, 3))`` over a flat batch: vmapped at once (None) or ``chunk_size`` at a time."""
    if chunk_size is None or chunk_size >= electrons.shape[0]:
        return jax.vmap(fn)(electrons, protons)
    return jax.lax.map(lambda a: fn(*a), (electrons, protons), batch_size=chunk_size)


def make_joint_train_step(model: ElectronicFreeEnergy, *, flow_learning_rate: float, wavefunction_optimizer: str,
                          wavefunction_learning_rate: float, proton_mcmc_steps: int, electron_mcmc_steps: int, damping: float = 1e-3,
                          clip_width: float | None = CLIP_WIDTH, target_acceptance: float = 0.5, chunk_size: int | None = None,
                          lipschitz_bound: float | None = None, lipschitz_weight: float = 100.0,
                          learning_rate_schedule: Callable | None = None) -> tuple[Callable, Callable]:
    """``(step(state) -> (state, metrics, finite), init_opt_states(flow_params, wavefunction_params))`` for
    :func:`thermoflow.optimize.optimise`.

    One step: ``proton_mcmc_steps`` Metropolis moves of the proton walkers on p (current flow), then for every
    twist ``electron_mcmc_steps`` moves of each configuration's electron walkers on |psi_X|^2 and their local
    energies, then one update of the flow (Adam on the score-function gradient) and of every twist's
    wavefunction (Adam or minSR on the mean VMC gradient over the configurations), and the step sizes
    moved towards ``target_acceptance`` (sigma exp(acceptance - target)).

    Args:
        model: :func:`make_electronic_free_energy`.
        flow_learning_rate: Adam's rate for the flow.
        wavefunction_optimizer: ``"adam"`` or ``"minsr"``.
        wavefunction_learning_rate: Adam's rate, or minSR's tau.
        proton_mcmc_steps, electron_mcmc_steps: Metropolis moves per walker per step.
        damping: minSR diagonal shift.
        clip_width: f = k_B T ln p + E_W (flow) and E_loc (wavefunction) clipped to median +- width x mean
            absolute deviation in the gradients (None: none); reported values are never clipped.
        target_acceptance: both step sizes are tuned towards it.
        chunk_size: local energies of this many electron walkers at a time (None: all B x W at once).
        lipschitz_bound, lipschitz_weight: the flow's loss adds :func:`thermoflow.flows.classical.lipschitz_penalty`
            (folding prevention; None: none).
        learning_rate_schedule: ``factor(step)`` multiplying both learning rates
            (:func:`thermoflow.optimize.learning_rate_factor`; None: constant). With minSR the walkers lag the
            parameters; a decaying rate closes the gap between the training trace and a frozen evaluation.

    Metrics (Hartree, cell totals): ``free_energy`` (the walkers' mean + the constant), ``free_energy_stderr``
    (plain, over the proton walkers), ``energy`` (E = 3/2 N k_B T + mean E_W), ``electronic_energy``,
    ``entropy`` (k_B), ``variance`` (of E_loc within a configuration, averaged), ``energy_imaginary``,
    ``negative_jacobians``, ``jacobian_norm_max`` (largest ||dg/dX||_2 over the walkers), ``proton_acceptance``, ``electron_acceptance``, ``proton_step_size`` and
    ``electron_step_size`` (bohr, before the step's update; the electrons' averaged over twists).
    """
    flow_transform = optax.adam(flow_learning_rate)
    proton_block = make_metropolis_block(model.log_density, model.flow.cell, proton_mcmc_steps)
    electron_blocks = [mcmc.make_metropolis_block(wf.log_psi, electron_mcmc_steps, per_walker_protons=True) for wf in model.wavefunctions]
    updaters = [make_wavefunction_update(wf.log_psi, optimizer=wavefunction_optimizer, learning_rate=wavefunction_learning_rate,
                                         damping=damping, clip_width=clip_width) for wf in model.wavefunctions]
    weights = jnp.asarray(model.twist_weights)
    kT = model.kT_Ha

    def init_opt_states(flow_params, wavefunction_params):
        return flow_transform.init(flow_params), tuple(() if t is None else t.init(p) for (_, t), p in zip(updaters, wavefunction_params))

    def flow_surrogate(params, protons, f):
        sign, log_p, norm = jax.vmap(model.log_density_and_norm, in_axes=(None, 0))(params, protons)
        penalty = 0.0 if lipschitz_bound is None else lipschitz_penalty(norm, kT, lipschitz_bound, lipschitz_weight)
        return jnp.mean(f * log_p) + penalty, (jnp.max(norm), jnp.mean(sign < 0))  # the Jacobians once: loss and monitors

    @jax.jit
    def step(state: JointState):
        k_protons, k_electrons = jax.random.split(jax.random.fold_in(state.key, state.step))
        walkers = init_walkers(model.log_density, state.flow_params, state.protons)
        walkers, proton_acceptance = proton_block(walkers, state.flow_params, k_protons, state.proton_step_size)
        protons = walkers.positions
        n_walkers = protons.shape[0]
        lr_scale = state.lr_scale if learning_rate_schedule is None else state.lr_scale * learning_rate_schedule(state.step)

        new_electrons, new_params, new_opt_states, e_means, e_variances, e_imag, acceptances = [], [], [], [], [], [], []
        for t, (wf, electron_block, (update, _)) in enumerate(zip(model.wavefunctions, electron_blocks, updaters)):
            params_t = state.wavefunction_params[t]
            shape = state.electrons[t].shape
            moved, acceptance, flat_r = _move_electrons(wf, electron_block, params_t, state.electrons[t], protons,
                                                        jax.random.fold_in(k_electrons, t), state.electron_step_size[t])
            e_loc = _walker_map(lambda x, r, p=params_t, wf=wf: wf.local_energy(p, x, r).total, moved.electrons, flat_r, chunk_size)
            electrons, e_loc = moved.electrons.reshape(shape), e_loc.reshape(shape[:2])
            params_t, opt_t = update(params_t, state.wavefunction_opt_state[t], lr_scale, electrons, protons, e_loc)
            new_electrons.append(electrons)
            new_params.append(params_t)
            new_opt_states.append(opt_t)
            e_means.append(jnp.mean(jnp.real(e_loc), axis=1))
            e_variances.append(jnp.mean(jnp.var(e_loc, axis=1)))
            e_imag.append(jnp.mean(jnp.imag(e_loc)))
            acceptances.append(acceptance)

        electronic = weights @ jnp.stack(e_means)  # (B,) twist-averaged E_W(X)
        f = kT * walkers.log_density + electronic
        used = clip_to_median(f, clip_width)
        centred = jax.lax.stop_gradient(used - jnp.mean(used))
        grads, (jacobian_norm_max, negative_jacobians) = jax.grad(flow_surrogate, has_aux=True)(state.flow_params, protons, centred)
        updates, flow_opt_state = flow_transform.update(grads, state.flow_opt_state, state.flow_params)
        flow_params = optax.apply_updates(state.flow_params, jax.tree.map(lambda u: lr_scale * u, updates))

        electron_acceptance = jnp.stack(acceptances)
        free_energy = jnp.mean(f) + model.constant_Ha
        energy = 1.5 * model.n_protons * kT + jnp.mean(electronic)
        metrics = {
            "free_energy": free_energy, "free_energy_stderr": jnp.std(f) / jnp.sqrt(n_walkers), "energy": energy,
            "electronic_energy": jnp.mean(electronic), "entropy": (energy - free_energy) / kT,
            "variance": weights @ jnp.stack(e_variances), "energy_imaginary": weights @ jnp.stack(e_imag),
            "negative_jacobians": negative_jacobians, "jacobian_norm_max": jacobian_norm_max, "proton_acceptance": proton_acceptance,
            "electron_acceptance": weights @ electron_acceptance, "proton_step_size": state.proton_step_size,
            "electron_step_size": weights @ state.electron_step_size,
        }
        new_state = dataclasses.replace(
            state, flow_params=flow_params, flow_opt_state=flow_opt_state, wavefunction_params=tuple(new_params),
            wavefunction_opt_state=tuple(new_opt_states), protons=protons, electrons=jnp.stack(new_electrons),
            proton_step_size=jnp.clip(state.proton_step_size * jnp.exp(proton_acceptance - target_acceptance), *STEP_SIZE_BOUNDS),
            electron_step_size=jnp.clip(state.electron_step_size * jnp.exp(electron_acceptance - target_acceptance), *ELECTRON_STEP_BOUNDS),
            step=state.step + 1)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((flow_params, tuple(new_params), metrics))]))
        return new_state, metrics, finite

    return step, init_opt_states


def initial_state(model: ElectronicFreeEnergy, init_opt_states: Callable, flow_params, wavefunction_params: Sequence, protons: jax.Array,
                  electrons: jax.Array, key: jax.Array, *, proton_step_size: float, electron_step_size: float | Sequence[float]) -> JointState:
    """The state before step 0: ``protons`` (B, N, 3), ``electrons`` (n_t, B, W, n_e, 3), bohr."""
    flow_opt, wf_opt = init_opt_states(flow_params, tuple(wavefunction_params))
    n_t = len(model.wavefunctions)
    return JointState(
        flow_params=flow_params, flow_opt_state=flow_opt, wavefunction_params=tuple(wavefunction_params), wavefunction_opt_state=wf_opt,
        protons=jnp.asarray(protons), electrons=jnp.asarray(electrons), proton_step_size=jnp.asarray(proton_step_size, jnp.float64),
        electron_step_size=jnp.broadcast_to(jnp.asarray(electron_step_size, jnp.float64), (n_t,)),
        step=jnp.asarray(0, jnp.int32), key=key, lr_scale=jnp.asarray(1.0, jnp.float64))


def make_evaluation_block(model: ElectronicFreeEnergy, *, proton_mcmc_steps: int, electron_mcmc_steps: int,
                          chunk_size: int | None = None) -> Callable:
    """``block(flow_params, wavefunction_params, protons (B, N, 3), electrons (n_t, B, W, n_e, 3), key, proton_step_size,
    electron_step_sizes (n_t,)) -> (protons, electrons, sums)``, jitted, at frozen parameters: the moves of one training
    step without the update, then per proton walker ``ln_p`` (B,), the twist-averaged walker means ``energy``,
    ``kinetic``, ``potential`` (B,) (Hartree, real parts), the acceptances and ``negative_jacobians``.
    """
    proton_block = make_metropolis_block(model.log_density, model.flow.cell, proton_mcmc_steps)
    electron_blocks = [mcmc.make_metropolis_block(wf.log_psi, electron_mcmc_steps, per_walker_protons=True) for wf in model.wavefunctions]
    weights = jnp.asarray(model.twist_weights)

    @jax.jit
    def block(flow_params, wavefunction_params, protons, electrons, key, proton_step_size, electron_step_sizes):
        k_protons, k_electrons = jax.random.split(key)
        walkers: Walkers = init_walkers(model.log_density, flow_params, protons)
        walkers, proton_acceptance = proton_block(walkers, flow_params, k_protons, proton_step_size)
        protons = walkers.positions
        moved, parts, acceptances = [], [], []
        for t, (wf, electron_block) in enumerate(zip(model.wavefunctions, electron_blocks)):
            params_t = wavefunction_params[t]
            shape = electrons[t].shape
            state, acceptance, flat_r = _move_electrons(wf, electron_block, params_t, electrons[t], protons,
                                                        jax.random.fold_in(k_electrons, t), electron_step_sizes[t])
            e = _walker_map(lambda x, r, p=params_t, wf=wf: wf.local_energy(p, x, r), state.electrons, flat_r, chunk_size)
            means = jnp.stack([jnp.real(e.total), jnp.real(e.kinetic), e.potential], axis=-1).reshape(*shape[:2], 3).mean(axis=1)
            moved.append(state.electrons.reshape(shape))
            parts.append(means)
            acceptances.append(acceptance)
        averaged = jnp.einsum("t,tbk->bk", weights, jnp.stack(parts))
        signs = jax.vmap(model.log_density_sign, in_axes=(None, 0))(flow_params, protons)
        sums = {"ln_p": walkers.log_density, "energy": averaged[:, 0], "kinetic": averaged[:, 1], "potential": averaged[:, 2],
                "proton_acceptance": proton_acceptance, "electron_acceptance": weights @ jnp.stack(acceptances),
                "negative_jacobians": jnp.mean(signs < 0)}
        return protons, jnp.stack(moved), sums

    return block


def evaluate(model: ElectronicFreeEnergy, flow_params, wavefunction_params, protons: jax.Array, electrons: jax.Array, key: jax.Array, *,
             n_blocks: int, proton_mcmc_steps: int, electron_mcmc_steps: int, proton_step_size: float, electron_step_sizes,
             chunk_size: int | None = None) -> dict[str, Any]:
    """F, E, S and P at frozen parameters from ``n_blocks`` evaluation blocks (:func:`make_evaluation_block`).

    Returns (Hartree, k_B, Hartree/bohr^3; cell totals) ``blocks``: per-block series of ``free_energy``,
    ``energy``, ``electronic_energy``, ``kinetic`` (electrons), ``potential``, ``entropy``, ``pressure``
    (N k_B T / Omega + (2 T_e + V) / (3 Omega)), for blocking error bars; ``proton_acceptance``,
    ``electron_acceptance``, ``negative_jacobians`` (means); ``protons`` and ``electrons`` (the final walkers).

    Raises:
        ValueError: ``n_blocks`` < 2.
    """
    if n_blocks < 2:
        raise ValueError(f"blocking error bars need at least two blocks, got {n_blocks}")
    block = make_evaluation_block(model, proton_mcmc_steps=proton_mcmc_steps, electron_mcmc_steps=electron_mcmc_steps,
                                  chunk_size=chunk_size)
    kT, n, volume = model.kT_Ha, model.n_protons, model.flow.volume
    rows, monitors = [], []
    for b in range(n_blocks):
        protons, electrons, sums = block(flow_params, tuple(wavefunction_params), protons, electrons, jax.random.fold_in(key, b),
                                         proton_step_size, jnp.asarray(electron_step_sizes))
        s = {k: np.asarray(v) for k, v in sums.items()}
        free = float(np.mean(kT * s["ln_p"] + s["energy"])) + model.constant_Ha
        electronic = float(np.mean(s["energy"]))
        energy = 1.5 * n * kT + electronic
        pressure = n * kT / volume + float(np.mean(2.0 * s["kinetic"] + s["potential"])) / (3.0 * volume)
        rows.append([free, energy, electronic, float(np.mean(s["kinetic"])), float(np.mean(s["potential"])), (energy - free) / kT, pressure])
        monitors.append([float(s["proton_acceptance"]), float(s["electron_acceptance"]), float(s["negative_jacobians"])])
    rows, monitors = np.asarray(rows), np.asarray(monitors)
    names = ("free_energy", "energy", "electronic_energy", "kinetic", "potential", "entropy", "pressure")
    return {"blocks": {name: rows[:, i] for i, name in enumerate(names)}, "proton_acceptance": float(monitors[:, 0].mean()),
            "electron_acceptance": float(monitors[:, 1].mean()), "negative_jacobians": float(monitors[:, 2].mean()),
            "protons": protons, "electrons": electrons}


def make_electron_equilibration(model: ElectronicFreeEnergy, *, electron_mcmc_steps: int) -> Callable:
    """``burn_in(wavefunction_params, protons (B, N, 3), electrons (n_t, B, W, n_e, 3), key, step_sizes (n_t,)) -> (electrons,
    acceptances (n_t,))``, jitted: one Metropolis block of every configuration's electrons at fixed protons and parameters
    (call it repeatedly, tuning the step sizes in between, before the first training step)."""
    blocks = [mcmc.make_metropolis_block(wf.log_psi, electron_mcmc_steps, per_walker_protons=True) for wf in model.wavefunctions]

    @jax.jit
    def burn_in(wavefunction_params, protons, electrons, key, step_sizes):
        moved, acceptances = [], []
        for t, (wf, block) in enumerate(zip(model.wavefunctions, blocks)):
            params_t = wavefunction_params[t]
            state, acceptance, _ = _move_electrons(wf, block, params_t, electrons[t], protons, jax.random.fold_in(key, t), step_sizes[t])
            moved.append(state.electrons.reshape(electrons[t].shape))
            acceptances.append(acceptance)
        return jnp.stack(moved), jnp.stack(acceptances)

    return burn_in
