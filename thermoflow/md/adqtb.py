"""Adaptive quantum thermal bath (adQTB): the deviation from the quantum fluctuation-dissipation
theorem per frequency and species, and the adaptation of the random-force friction gamma_r(omega).

In the QTB the Langevin friction gamma is fixed and the random force R has the power spectrum
2 m gamma_r(omega) theta(omega, T) (gamma_r = gamma in the plain QTB). Its fluctuation-dissipation
theorem holds, frequency by frequency, when the power the random force injects equals the power
the friction removes,

    Delta_FDT(omega) = Re[C_vR(omega)] - m gamma_r(omega) C_vv(omega) = 0,

which is exact for a harmonic system at gamma_r = gamma. Anharmonic couplings move the
zero-point energy of stiff modes into soft ones (zero-point-energy leakage): a frequency that
loses energy to others has Delta_FDT > 0 (the bath injects more than the friction takes back),
one that gains energy has Delta_FDT < 0. adQTB raises gamma_r where Delta_FDT > 0 and lowers it
where Delta_FDT < 0, d gamma_r(omega) / dt = A_gamma Delta_FDT(omega), until the deviation
vanishes (the "simple" adaptation of Mangaud et al.).

Discrete form used here: the O step changes a velocity v into c1 v + u (u: the kick of the
random force, c1 = exp(-gamma dt)); its kinetic-energy change -m (1 - c1^2) v^2 / 2 + m c1 v u
+ m u^2 / 2 splits into the friction's dissipation D(omega) = m (1 - c1^2) C_vv(omega) / 2 and the
random force's injection I(omega) = m c1 Re C_vu(omega) + m C_uu(omega) / 2, which tend to
dt m gamma C_vv and dt Re C_vR as dt -> 0. So dt Delta_FDT = I - (gamma_r / gamma) D. In a steady
harmonic system I = D at every frequency (energy balance), so the deviation is
(1 - gamma_r / gamma) D: gamma_r is pulled back to gamma, and only anharmonic energy transfer
moves it elsewhere. (For the plain QTB, gamma_r = gamma and Delta_FDT = Re C_vR - m gamma C_vv.)
Spectra are periodograms over segments of the trajectory (one segment = one QTB filter length),
per degree of freedom, averaged over the atoms of each species. The deviation used and reported
is relative, divided by the running-mean dissipation of the bin plus a floor
(:func:`relative_deviation`), so that the adaptation rate is the same at every frequency.

References: E. Mangaud, S. Huppert, T. Ple, P. Depondt, S. Bonella and F. Finocchi,
J. Chem. Theory Comput. 15, 2863 (2019), doi:10.1021/acs.jctc.8b01164; H. Dammak, Y. Chalopin,
M. Laroche, M. Hayoun and J.-J. Greffet, Phys. Rev. Lett. 103, 190601 (2009),
doi:10.1103/PhysRevLett.103.190601.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: floor of the deviation's normalisation, as a fraction of the band-averaged dissipation
DEVIATION_FLOOR = 0.1
#: bounds on gamma_r / gamma: the adaptation never switches a frequency's bath off nor lets it run away
GAMMA_RATIO_BOUNDS = (0.05, 50.0)


def fdt_spectra(
    velocities: jax.Array, kicks: jax.Array, masses: jax.Array, species: jax.Array, n_species: int, c1: float
) -> tuple[jax.Array, jax.Array]:
    """Injected and dissipated kinetic-energy spectra of one segment, per species.

    Args:
        velocities: (n_steps, n_atoms, 3) velocities before each O step, A / ASE time.
        kicks: (n_steps, n_atoms, 3) velocity change of the random force in each O step, A / ASE time.
        masses: (n_atoms,) amu.
        species: (n_atoms,) int species index in [0, n_species).
        n_species: number of species.
        c1: exp(-gamma dt).

    Returns:
        ``(injection, dissipation)``, each (n_species, n_steps // 2 + 1), eV per step per degree of
        freedom and frequency bin (bin j at omega_j = 2 pi j / (n_steps dt)); their averages over
        the bins are the mean energy the O step injects / removes per step and degree of freedom.
    """
    n_steps = velocities.shape[0]
    v_hat = jnp.fft.rfft(velocities, axis=0)
    u_hat = jnp.fft.rfft(kicks, axis=0)
    m = masses[None, :, None]
    injection = (m * c1 * jnp.real(v_hat * jnp.conj(u_hat)) + 0.5 * m * jnp.abs(u_hat) ** 2) / n_steps
    dissipation = 0.5 * m * (1.0 - c1**2) * jnp.abs(v_hat) ** 2 / n_steps
    counts = 3.0 * jax.ops.segment_sum(jnp.ones_like(masses), species, n_species)

    def per_species(spectrum):  # (bins, atoms, 3) -> (species, bins)
        return jax.ops.segment_sum(jnp.sum(spectrum, axis=-1).T, species, n_species) / counts[:, None]

    return per_species(injection), per_species(dissipation)


def relative_deviation(
    injection: jax.Array, dissipation: jax.Array, gamma_ratio: jax.Array, reference: jax.Array, band: jax.Array
) -> jax.Array:
    """Relative FDT deviation (I - (gamma_r / gamma) D) / (D_ref + FLOOR <D_ref>) per species and bin.

    Args:
        injection, dissipation: (n_species, n_bins) from :func:`fdt_spectra` (one segment, or running means).
        gamma_ratio: (n_species, n_bins) gamma_r / gamma.
        reference: (n_species, n_bins) dissipation spectrum that sets the scale (the running mean);
            the floor FLOOR <D_ref> (mean over the band) keeps bins without modes from amplifying noise.
        band: (n_bins,) bool, the bins below the QTB cutoff.

    Returns:
        (n_species, n_bins), dimensionless; about 1 - gamma_r / gamma in a harmonic system's modes;
        zero outside ``band``.
    """
    mean_ref = jnp.sum(jnp.where(band, reference, 0.0), axis=1, keepdims=True) / jnp.sum(band)
    scale = jnp.maximum(reference + DEVIATION_FLOOR * mean_ref, 1e-300)
    return jnp.where(band, (injection - gamma_ratio * dissipation) / scale, 0.0)


def adapt_gamma_ratio(gamma_ratio: jax.Array, deviation: jax.Array, rate: float, band: jax.Array) -> jax.Array:
    """One adaptation step gamma_r / gamma <- gamma_r / gamma + rate * deviation (within the band).

    Args:
        gamma_ratio: (n_species, n_bins) gamma_r(omega) / gamma.
        deviation: (n_species, n_bins) relative FDT deviation of the segment
            (:func:`relative_deviation`): positive where the bath injects more than it removes.
        rate: adaptation rate per segment (A_gamma times the segment duration), dimensionless.
        band: (n_bins,) bool, the bins that adapt (below the cutoff).

    Returns:
        The new (n_species, n_bins) ratio, clipped to :data:`GAMMA_RATIO_BOUNDS`.

    References: E. Mangaud et al., J. Chem. Theory Comput. 15, 2863 (2019), doi:10.1021/acs.jctc.8b01164.
    """
    updated = jnp.clip(gamma_ratio + rate * deviation, *GAMMA_RATIO_BOUNDS)
    return jnp.where(band, updated, gamma_ratio)
