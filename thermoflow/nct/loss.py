"""Variational free energy of the NCT density matrix and its gradient estimators.

F = kT Tr(rho ln rho) + Tr(rho H) = -kT S[p] + E_{n~p} E_{s~|Psi_n|^2}[E_loc(s)] >= F_exact
(Gibbs-Bogoliubov-Feynman). With a product spectrum S[p] is exact. Gradients:

* occupations (REINFORCE): d/dphi E_n[E_n] = E[(E_loc - b) d ln p_n / dphi], plus the exact
  entropy gradient;
* flow: d/dtheta E = 2 E[(E_loc - b) d ln|Psi_n| / dtheta] (valid for any constant b because every
  Psi_n stays normalised).

Control variate. The harmonic excitation energy H0(n) = sum_k hbar omega_k n_k carries most of
the spread of local energies between states, and its average over the product spectrum,
sum_k hbar omega_k <n_k>, is known exactly (with its gradient). thermoflow therefore estimates
E = <H0>_exact + E[E_loc - H0(n)] and uses the residual r = E_loc - H0(n) in both gradient
estimators: for the occupations, grad E = grad <H0>_exact + E[(r - b) grad ln p_n]; for the flow,
E[H0(n) grad ln|Psi_n|] = 0 state by state (each Psi_n is normalised), so
2 E[(r - b) grad ln|Psi_n|] is the same unbiased gradient. On a harmonic crystal r is constant
and F is exact with zero variance.

The baseline b is the batch mean of r; the factor B/(B-1) removes the O(1/B) bias of using the
sample's own batch mean. Outliers of r (near nodes of excited states) are clipped in the
gradient only, at median +- ``clip_width`` x mean absolute deviation. Clipping raw local
energies instead would pull the rare, legitimately higher energies of excited states towards
the ground-state median, bias the occupation gradient and overpopulate excited states.
Reported energies are never clipped.
Samples are exact and independent (see :mod:`thermoflow.nct.wavefunction`).

Autoregressive occupations (``occupations="autoregressive"``, a VAN). Neither S nor <H0> is
analytic any more; everything comes from the batch's own samples, without bias:

* free energy: the mean of the local free energy f = E_loc + kT ln p_n (the VAN estimator). At
  the Boltzmann distribution of the states' energies kT ln p_n = -E_n - kT ln Z, so f varies
  only within a state: the sampled entropy cancels the spread of energies between states that
  the exact <H0> removes in the product option, and at the start (the harmonic product
  spectrum) on a harmonic crystal F is exact with zero variance, as there;
* occupation gradient: d/dphi F = E[(f - b) d ln p_n / dphi] (REINFORCE for energy and entropy
  together, :func:`thermoflow.nct.occupations.free_energy_surrogate`), with the clipped residual
  r plus H0(n) as the energy; the flow gradient keeps the residual r as above;
* energy: <H0> becomes the sample mean of its conditional expectation
  h(n) = sum_k hbar omega_k E[n_k | n_<k] (tower property: E_p[h] = <H0> for any p), from the
  conditionals that also give ln p_n, so E = mean(r + h) stays free of the spread of H0 between states; for the
  product spectrum h(n) is the exact <H0> itself. The entropy is then (E - F)/kT, whose
  per-sample value -ln p_n - (H0(n) - h(n))/kT is -ln p_n with the zero-mean control variate
  H0 - h: unbiased, F = E - kT S within each batch, and exact at the start on a harmonic crystal.

Cost: a network pass per sample for ln p_n (with its gradient) and for h(n), plus D sequential
steps for the ancestral samples (each O(batch x hidden x K)): small next to the local energies.

References: Q. Zhang et al., Phys. Rev. Lett. 134, 246101 (2025), arXiv:2409.09813;
R. J. Williams, Mach. Learn. 8, 229 (1992), doi:10.1007/BF00992696 (REINFORCE); D. Wu, L. Wang,
P. Zhang, Phys. Rev. Lett. 122, 080602 (2019), doi:10.1103/PhysRevLett.122.080602 (VAN).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from thermoflow.nct.occupations import OccupationModel, baseline_weights, conditional_mean_levels, free_energy_surrogate, make_occupations
from thermoflow.nct.flow import Flow
from thermoflow.nct.hamiltonian import (
    harmonic_kinetic_energy,
    make_directional_jet_kinetic_energy,
    make_directional_kinetic_energy,
    make_jet_kinetic_energy,
    make_kinetic_energy,
    make_kinetic_stress,
)
from thermoflow.nct.wavefunction import make_log_psi, make_sampler
from thermoflow.optimize import clip_to_median
from thermoflow.parallel import check_batch_divisible, constrain_batch, map_over_batch, n_devices
from thermoflow.phonons.modes import HarmonicModes
from thermoflow.potentials.base import EnergyFn, virial


@dataclasses.dataclass(frozen=True)
class FreeEnergyModel:
    """Everything the NCT loss needs, as pure functions of ``params``.

    Attributes:
        init: ``init(key) -> params`` with ``params = {"flow": ..., "logits": (D, K)}`` (product
            spectrum) or ``{"flow": ..., "occupations": {...}}`` (autoregressive), plus
            ``"strain"`` (NPT).
        loss: ``loss(params, key) -> (surrogate, metrics)``; ``jax.grad`` of the surrogate is
            the free-energy gradient estimator; ``metrics`` hold batch means (eV, total).
        local_energy: ``(params, levels (D,), s (D,), key) -> (kinetic, potential)`` eV.
        local_energies: the same for a batch, ``(params, levels (B, D), s (B, D), keys (B,))``,
            evaluated in chunks of ``chunk_size``.
        log_psi: ``(flow_params, levels, s) -> ln|Psi_n(s)|``.
        sample: ``(params, key, batch_size) -> (levels (B, D), s (B, D))``.
        sample_states: ``(flow_params, key, levels (B, D)) -> s (B, D)``, exact samples of given
            states; the uniforms behind them depend on the key and the shape only, so two level
            arrays sampled with one key give correlated samples.
        phonon_energies_eV: (D,) hbar omega_k of the basis.
        kT_eV: thermal energy.
        n_levels: K.
        configuration: ``(params, s (D,)) -> (positions (N, 3) A, cell (3, 3) A)``, the nuclear
            configuration of mode coordinates s: R0 + B s (B = ``modes.displacement_matrix()``),
            positions and cell (Cartesian components) scaled by 1 + the strain of an NPT model.
        occupations: the occupation model (its parameters are ``params[occupations.param_name]``).
        mesh: the device mesh the batch is split over (None: one device).
    """

    init: Callable
    loss: Callable
    local_energy: Callable
    local_energies: Callable
    log_psi: Callable
    sample: Callable
    sample_states: Callable
    phonon_energies_eV: np.ndarray
    kT_eV: float
    n_levels: int
    configuration: Callable | None = None
    occupations: OccupationModel | None = None
    mesh: Mesh | None = None


#: central-difference step of the cell scale for ``strain_derivative = "central_difference"``:
#: truncation (h^2 / 6) V''' (2.6e-7 eV at h = 1e-5 on 32 fcc atoms of lithium_dp4) and the rounding of
#: the energies / h (1.3e-7 eV at h = 3e-6 on 16 bcc atoms) are ~1e-7 eV, a pressure error of ~2e-8 GPa
STRAIN_DIFFERENCE_STEP = 3e-6


def resolve_strain_derivative(choice: str, energy_fn: EnergyFn) -> str:
    """``"forward"`` or ``"central_difference"`` for an NPT strain derivative ``choice``: ``"auto"``
    picks central differences for a compressed Deep Potential (an ``energy_fn`` with a
    ``compression`` attribute: energies from tables, derivatives through the network, 4-5 energies
    each) and forward mode otherwise.

    Raises:
        ValueError: an unknown choice.
    """
    if choice == "auto":
        return "central_difference" if getattr(energy_fn, "compression", None) is not None else "forward"
    if choice not in ("forward", "central_difference"):
        raise ValueError(f"unknown strain derivative {choice!r} (auto, forward or central_difference)")
    return choice


def make_free_energy_model(
    energy_fn: EnergyFn,
    modes: HarmonicModes,
    flow: Flow,
    *,
    kT_eV: float,
    n_levels: int,
    batch_size: int,
    laplacian: str = "auto",
    freeze_flow: bool = False,
    clip_width: float = 5.0,
    chunk_size: int | None = None,
    stress: bool = False,
    pressure_eV_per_A3: float | None = None,
    strain_samples: int | None = None,
    strain_derivative: str = "auto",
    cell_strain: str = "isotropic",
    occupations: str = "product",
    occupation_hidden: int = 64,
    mesh: Mesh | None = None,
) -> FreeEnergyModel:
    """Build the NCT free-energy loss for a crystal (see module docstring).

    Args:
        energy_fn: potential, ``(positions (N, 3) A, cell (3, 3) A) -> eV``.
        modes: harmonic reference (frequencies, eigenvectors, R0, cell).
        flow: bijection of the D = ``modes.n_modes`` dimensionless coordinates.
        kT_eV: thermal energy, eV.
        n_levels: harmonic-oscillator levels K per mode.
        batch_size: samples per step B (>= 2).
        laplacian: kinetic-energy method, see :mod:`thermoflow.nct.hamiltonian` ("auto": the
            flow's analytic jet if it has one, else folx).
        freeze_flow: keep the flow at the identity (harmonic wavefunctions); the kinetic
            energy is then analytic and only the occupations are optimised.
        clip_width: outlier clipping of local energies in the gradient (0 disables).
        chunk_size: evaluate the local energies of at most this many samples at once
            (``jax.lax.map`` over chunks, vmap within a chunk). Peak memory of the forward
            Laplacian grows with chunk x modes x network width; None evaluates the whole
            batch at once. Results do not depend on it.
        stress: also estimate the pressure and the stress tensor (metrics ``"pressure"``,
            ``"stress"`` and ``"kinetic_stress"``, eV/A^3; stress in ASE's sign convention,
            -P on the diagonal of a hydrostatic state). ``"pressure"`` is the derivative of the
            free-energy estimator with respect to an isotropic strain of the cell, positions and
            state together (the state fixed in scaled coordinates): the quantum virial estimator
            P = (2 <K> + <tr W>) / (3 V) with W the potential's virial
            (:func:`thermoflow.potentials.base.virial`) and <K> carrying the whole harmonic
            control variate. ``"stress"`` is sigma = -(Pi + W) / V with the full kinetic tensor
            Pi from the wavefunction (:func:`thermoflow.nct.hamiltonian.make_kinetic_stress`,
            not assumed isotropic); -tr(sigma)/3 is a second, independent estimator of P. One
            strain gradient and one ln|Psi| gradient per sample: meant for evaluations.
            (Cf. M. Parrinello and A. Rahman, J. Chem. Phys. 80, 860 (1984),
            doi:10.1063/1.446740, virial estimators.)
        pressure_eV_per_A3: external pressure P* (NPT). The parameters then hold an isotropic
            strain e (``params["strain"]``, 0 at the start) of the cell, R0 and the state
            (fixed in scaled coordinates: kinetic energies scale by (1 + e)^-2), and the loss is
            the Gibbs free energy G = F + P* V with V = V0 (1 + e)^3. Its strain gradient is the
            exact derivative of the F estimator (one forward-mode derivative of the potential per
            sample) plus 3 P* V0 (1 + e)^2, so the strain settles where the quantum virial
            pressure equals P*. Metrics gain ``"gibbs_free_energy"`` (eV), ``"volume"`` (A^3),
            ``"strain"`` and, every step, ``"pressure"`` (eV/A^3). The basis keeps the reference
            cell's frequencies scaled by (1 + e)^-2 (affine in the strain); for strains of more
            than a few per cent recompute the basis at the new cell.
        strain_samples: NPT: the potential's strain derivative from only this many of the
            batch's samples (unbiased, noisier; the derivative costs more than an energy on a
            Deep Potential, see benchmarks/npt_step.py). None: all. With ``stress`` the virial of
            every sample gives it instead (no second strain derivative).
        strain_derivative: NPT training: how the potential's strain derivative of the subset is
            taken: ``"auto"`` (:func:`resolve_strain_derivative`: central differences for a
            compressed Deep Potential, else forward), ``"forward"`` (forward-mode autodiff, exact) or ``"central_difference"``
            (``[V(1 + e + h) - V(1 + e - h)] / 2h``, h = ``STRAIN_DIFFERENCE_STEP``: two energies per
            sample and direction, within ~1e-7 eV of forward mode on lithium_dp4, i.e. ~2e-8 GPa). Central differences are for
            potentials whose energies are much cheaper than their derivatives: a compressed Deep
            Potential takes values from its tables but derivatives through the network (54 bcc Li
            atoms: 19.5 ms per energy, 95 ms per forward-mode derivative; benchmarks/npt_step.py).
            The final evaluation's pressure and stress come from the virial either way.
        cell_strain: NPT: ``"isotropic"`` (one strain e, above) or ``"orthorhombic"``: three
            strains e = (e_x, e_y, e_z) (``params["strain"]`` of shape (3,)) scale the Cartesian
            components of the cell, R0 and the state separately, V = V0 prod(1 + e), for a cell
            whose lattice vectors lie along x, y, z. The kinetic energy then scales per
            direction, K(e) = sum_a K_a / (1 + e_a)^2, which needs the state's local kinetic
            energy split by Cartesian direction: for the harmonic states of the basis
            (``freeze_flow``) it is exact per state, K_a(n) = sum_k (n_k + 1/2) hbar omega_k
            P_k,aa / 2 with P_k,aa the weight of mode k along a; with a flow it comes from three
            directional Laplacians (the flow's jet in three metrics,
            :func:`thermoflow.nct.hamiltonian.make_directional_jet_kinetic_energy`, when the kinetic
            energy uses the jet; else :func:`thermoflow.nct.hamiltonian.make_directional_kinetic_energy`
            with folx, or with ``laplacian`` exact or hutchinson),
            so it remains the exact H Psi / Psi that the flow gradient needs. The strain
            gradient is the exact derivative of the F estimator (a forward-mode Jacobian of the
            potential, or the virial's diagonal with ``stress``); metrics gain ``"pressure_x"``,
            ``"pressure_y"``, ``"pressure_z"`` (-sigma_aa, eV/A^3) and ``"pressure"`` their mean.
            The control variate H0(n) is then not scaled with the strain (it stays exact).
        occupations: ``"product"`` (exact entropy and <H0>) or ``"autoregressive"`` (a VAN over
            the modes' levels, estimators in the module docstring); both start at the harmonic
            Boltzmann occupations of the basis (:func:`thermoflow.nct.occupations.make_occupations`).
        occupation_hidden: hidden units of the autoregressive network.
        mesh: split the batch over the devices of this one-axis mesh
            (:func:`thermoflow.parallel.make_batch_mesh`): each device evaluates the local
            energies and stresses of its share of the samples (``chunk_size`` at a time),
            parameters are replicated, means and gradients are reduced across devices. The
            samples are drawn from the global key first, so the estimates do not depend on the
            number of devices beyond round-off. None: one device.

    Raises:
        ValueError: for batch_size < 2, a chunk_size < 1, a flow of the wrong dimension, an
            unknown occupation model or cell strain, an orthorhombic strain of a cell whose
            lattice vectors do not lie along x, y, z, or a batch that does not split evenly over
            the mesh.
    """
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 (the baseline needs two samples)")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    if flow.dim != modes.n_modes:
        raise ValueError(f"flow dimension {flow.dim} != number of modes {modes.n_modes}")
    check_batch_divisible(batch_size, mesh)
    eps = jnp.asarray(modes.phonon_energies_eV)
    r0 = jnp.asarray(modes.reference_positions)
    cell = jnp.asarray(modes.cell)
    disp = jnp.asarray(modes.displacement_matrix())
    log_psi = make_log_psi(flow, n_levels)
    sample_s = make_sampler(flow, n_levels)
    kinetic_by_jet = laplacian == "jet" or (laplacian == "auto" and flow.jet is not None)
    if kinetic_by_jet:
        kinetic_fn = make_jet_kinetic_energy(flow, n_levels, eps)
    else:
        kinetic_fn = make_kinetic_energy(log_psi, eps, "folx" if laplacian == "auto" else laplacian)
    occ = make_occupations(occupations, np.asarray(modes.phonon_energies_eV), kT_eV, n_levels, n_hidden=occupation_hidden)

    npt = pressure_eV_per_A3 is not None
    if cell_strain not in ("isotropic", "orthorhombic"):
        raise ValueError(f"unknown cell strain {cell_strain!r} (isotropic or orthorhombic)")
    orthorhombic = npt and cell_strain == "orthorhombic"
    if orthorhombic:
        c = np.asarray(modes.cell)
        if np.abs(c - np.diag(np.diag(c))).max() > 1e-8 * np.abs(c).max():
            raise ValueError(f"an orthorhombic NPT strain needs the lattice vectors along x, y, z (a diagonal cell), got {c.tolist()}")
    n_strain = batch_size if strain_samples is None else min(max(strain_samples, 2), batch_size)
    strain_derivative = resolve_strain_derivative(strain_derivative, energy_fn)
    volume = float(abs(np.linalg.det(np.asarray(modes.cell))))

    def init(key):
        params = {"flow": flow.init(key), occ.param_name: occ.init(key)}
        if npt:
            params["strain"] = jnp.zeros((3,) if orthorhombic else ())
        return params

    def scale_of(params):
        """1 + the strain of the cell (NPT; () isotropic or (3,) per Cartesian direction), else 1."""
        return 1.0 + params["strain"] if npt else jnp.ones(())

    def control_variate_scale(scale):
        """The strain's factor on H0(n): the kinetic energy's (1 + e)^-2 if isotropic, else 1."""
        return 1.0 if orthorhombic else scale**2

    if orthorhombic and freeze_flow:
        # weight of mode k along each Cartesian direction: P_k,aa = sum over atoms of e_(atom a),k^2 (rows sum to 1)
        e_atoms = np.asarray(modes.modes).reshape(len(modes.masses), 3, -1)
        directional_weights = jnp.asarray(np.einsum("aik->ki", e_atoms**2))  # (D, 3)

        def directional_kinetic(levels):
            """(3,) exact kinetic energy of the harmonic state n per Cartesian direction, eV."""
            return 0.5 * ((levels + 0.5) * eps) @ directional_weights
    elif orthorhombic and kinetic_by_jet:  # three jets, one per Cartesian metric
        flow_directional_kinetic = make_directional_jet_kinetic_energy(flow, n_levels, modes.modes, eps)
    elif orthorhombic:  # three directional Laplacians
        flow_directional_kinetic = make_directional_kinetic_energy(log_psi, modes.modes, eps, "folx" if laplacian == "auto" else laplacian)

    def positions(s, scale):
        return (r0 + (disp @ s).reshape(r0.shape)) * scale

    def potential_energy(s, scale):
        return energy_fn(positions(s, scale), cell * scale)

    def kinetic(params, levels, s, key):
        """Local kinetic energy at the reference cell; a strain 1 + e scales it by (1 + e)^-2
        (the state is fixed in scaled coordinates)."""
        if freeze_flow:
            return harmonic_kinetic_energy(levels, s, eps)
        return kinetic_fn(params["flow"], levels, s, key)

    def local_energy_terms(params, levels, s, key):
        """(local kinetic energy, potential energy) at the params' strain, eV; the kinetic energy
        per Cartesian direction (3,) for an orthorhombic strain: exact per state for the basis'
        harmonic states (freeze_flow), else from directional Laplacians."""
        scale = scale_of(params)
        if not orthorhombic:
            return kinetic(params, levels, s, key) / scale**2, potential_energy(s, scale)
        if freeze_flow:
            per_direction = directional_kinetic(levels)
        else:
            per_direction = flow_directional_kinetic(params["flow"], levels, s, key)
        return per_direction / scale**2, potential_energy(s, scale)

    def local_energy(params, levels, s, key):
        kin, pot = local_energy_terms(params, levels, s, key)
        return jnp.sum(kin), pot

    def potential_strain_derivative(params, levels, s, key):
        """d V / d strain at the params' strain, by forward mode (one derivative, three if
        orthorhombic) or by central differences (two energies per direction)."""
        scale = scale_of(params)
        if strain_derivative == "central_difference":
            h = STRAIN_DIFFERENCE_STEP

            def difference(step):
                return (potential_energy(s, scale + step) - potential_energy(s, scale - step)) / (2.0 * h)

            return jax.vmap(difference)(h * jnp.eye(3)) if orthorhombic else difference(h)
        if orthorhombic:
            return jax.jacfwd(lambda x: potential_energy(s, x))(scale)
        return jax.jvp(lambda x: potential_energy(s, x), (scale,), (jnp.ones_like(scale),))[1]

    kinetic_tensor = make_kinetic_stress(flow, n_levels, modes.modes, modes.omega, modes.masses)

    def tensors(shared, levels, s, key):
        flow_params, scale = shared
        axes = jnp.broadcast_to(scale, (3,))  # the state is fixed in scaled coordinates: Pi_ab / (s_a s_b)
        pi = kinetic_tensor(flow_params, levels, s) / jnp.outer(axes, axes)
        return pi, virial(energy_fn, positions(s, scale), cell * scale)

    def batched(fn, params, levels, s, keys):
        """``fn(params, levels, s, key)`` over a batch: split over the mesh's devices, then in
        chunks of ``chunk_size`` on each. ``params`` (any pytree) is shared by all samples."""

        def on_device(params, levels, s, keys):
            if chunk_size is None or chunk_size >= levels.shape[0]:
                return jax.vmap(fn, in_axes=(None, 0, 0, 0))(params, levels, s, keys)
            return jax.lax.map(lambda x: fn(params, *x), (levels, s, keys), batch_size=chunk_size)

        if levels.shape[0] % n_devices(mesh):  # an uneven batch (post-processing) stays on one device
            return on_device(params, levels, s, keys)
        return map_over_batch(on_device, mesh)(params, levels, s, keys)

    def batched_local_energy(params, levels, s, keys):
        return batched(local_energy, params, levels, s, keys)

    def sample(params, key, n_samples):
        k_levels, k_s = jax.random.split(key)
        levels = occ.sample(params[occ.param_name], k_levels, n_samples)
        return levels, sample_s(params["flow"], k_s, levels)

    def loss(params, key):
        if freeze_flow:
            params = {**params, "flow": jax.lax.stop_gradient(params["flow"])}
        k_sample, k_kin = jax.random.split(key)
        levels, s = sample(jax.lax.stop_gradient(params), k_sample, batch_size)
        levels, s = constrain_batch((levels, jax.lax.stop_gradient(s)), mesh)
        frozen_params = jax.lax.stop_gradient(params)
        keys = jax.random.split(k_kin, batch_size)
        kin, pot = batched(local_energy_terms, frozen_params, levels, s, keys)
        if orthorhombic:
            kin_per_direction, kin = kin, jnp.sum(kin, axis=-1)
        e_loc = kin + pot
        scale = scale_of(frozen_params)
        # H0(n), the control variate, scaled with the kinetic energy under an isotropic strain (NPT):
        # then the strain derivative of the F estimator below is exact
        cv_scale = control_variate_scale(scale)
        excitation = levels @ eps / cv_scale
        residual = e_loc - excitation
        r_used = clip_to_median(residual, clip_width) if clip_width > 0 else residual
        weight = baseline_weights(r_used)
        occ_params = params[occ.param_name]
        log_p = jax.vmap(occ.log_probability, in_axes=(None, 0))(occ_params, levels)
        log_abs_psi = jax.vmap(log_psi, in_axes=(None, 0, 0))(params["flow"], levels, s)
        if occ.entropy is not None:  # independent modes: S and <H0> exact, with exact gradients
            entropy = occ.entropy(occ_params)
            mean_excitation = jnp.sum(occ.mean_levels(occ_params) * eps)
            surrogate = jnp.mean(weight * (log_p + 2.0 * log_abs_psi)) + mean_excitation / cv_scale - kT_eV * entropy
            h0 = jax.lax.stop_gradient(mean_excitation) / cv_scale
            energy = jnp.mean(residual) + h0
            entropy = jax.lax.stop_gradient(entropy)
            free_energy = energy - kT_eV * entropy
            energy_stderr = jnp.std(residual) / jnp.sqrt(batch_size)
        else:  # autoregressive: F from f = E_loc + kT ln p_n, <H0> from its conditional expectation
            conditional_levels = jax.vmap(conditional_mean_levels, in_axes=(None, None, 0))(occ, frozen_params[occ.param_name], levels)
            h = conditional_levels @ eps / cv_scale
            surrogate = free_energy_surrogate(log_p, r_used + excitation, kT_eV) + jnp.mean(weight * 2.0 * log_abs_psi)
            h0 = jnp.mean(h)
            energy = jnp.mean(residual) + h0
            free_energy = jnp.mean(e_loc) + kT_eV * jnp.mean(jax.lax.stop_gradient(log_p))
            entropy = (energy - free_energy) / kT_eV
            energy_stderr = jnp.std(residual + h) / jnp.sqrt(batch_size)
        metrics = {
            "free_energy": free_energy,
            "energy": energy,
            "energy_stderr": energy_stderr,
            # harmonic excitations are half kinetic, half potential (virial theorem)
            "kinetic": jnp.mean(kin - 0.5 * excitation) + 0.5 * h0,
            "potential": jnp.mean(pot - 0.5 * excitation) + 0.5 * h0,
            "entropy": entropy,
            "local_energy_variance": jnp.var(e_loc),
        }
        strained_volume = volume * jnp.prod(jnp.broadcast_to(scale, (3,)))
        kinetic_cv = jnp.mean(kin - excitation) + h0  # kinetic energy with the whole control variate
        if stress:
            pi, w = batched(tensors, (frozen_params["flow"], scale), levels, s, keys)
            pi, w = jnp.mean(pi, axis=0), jnp.mean(w, axis=0)
            metrics["kinetic_stress"] = -pi / strained_volume
            metrics["stress"] = -(pi + w) / strained_volume
            if not npt:  # the strain derivative of the energy estimator
                metrics["pressure"] = (2.0 * kinetic_cv + jnp.trace(w)) / (3.0 * strained_volume)
        if npt:
            # exact derivative of the F estimator along the strain (samples fixed in scaled
            # coordinates). dV/d(strain) = -tr(W) / scale: from the virial when it is computed,
            # else by forward mode on the first n_strain samples (an unbiased subset: iid samples)
            if stress:
                mean_dpot = -(jnp.diagonal(w) if orthorhombic else jnp.trace(w)) / scale
            else:
                mean_dpot = jnp.mean(batched(potential_strain_derivative, frozen_params, levels[:n_strain], s[:n_strain], keys[:n_strain]), axis=0)
            if orthorhombic:
                d_free_energy = -2.0 * jnp.mean(kin_per_direction, axis=0) / scale + mean_dpot
                pressures = -scale * d_free_energy / strained_volume  # -sigma_aa = -(1/V) dF/d(ln(1 + e_a))
                metrics.update({f"pressure_{a}": pressures[i] for i, a in enumerate("xyz")})
                metrics["pressure"] = jnp.mean(pressures)
            else:
                d_free_energy = -2.0 * kinetic_cv / scale + mean_dpot
                metrics["pressure"] = -scale * d_free_energy / (3.0 * strained_volume)
            gibbs_volume = pressure_eV_per_A3 * volume * jnp.prod(jnp.broadcast_to(1.0 + params["strain"], (3,)))
            surrogate = surrogate + jnp.sum(params["strain"] * jax.lax.stop_gradient(d_free_energy)) + gibbs_volume
            metrics["gibbs_free_energy"] = free_energy + pressure_eV_per_A3 * strained_volume
            metrics["volume"] = strained_volume
            metrics["strain"] = frozen_params["strain"]
        return surrogate, metrics

    return FreeEnergyModel(
        init=init,
        loss=loss,
        local_energy=local_energy,
        local_energies=batched_local_energy,
        log_psi=log_psi,
        sample=sample,
        sample_states=sample_s,
        phonon_energies_eV=np.asarray(modes.phonon_energies_eV),
        kT_eV=kT_eV,
        n_levels=n_levels,
        occupations=occ,
        mesh=mesh,
        configuration=lambda params, s: (positions(s, scale_of(params)), cell * scale_of(params)),
    )
