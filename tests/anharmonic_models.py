"""Small analytic potentials used by the tests as user plug-ins (``kind = "python"``)."""

import jax.numpy as jnp


def make_anharmonic_atom(atoms=None, spring_eV_per_A2=1.0, quartic_eV_per_A4=2.0, coupling_eV_per_A4=2.0):
    """One atom in an anharmonic well about its initial position r0:
    V = k/2 |u|^2 + lam (x^4 + y^4 + z^4) + mu (x^2 y^2 + y^2 z^2 + z^2 x^2), u = R - r0, eV."""
    r0 = jnp.asarray(atoms.get_positions()[0]) if atoms is not None else jnp.zeros(3)

    def energy_fn(positions, cell):
        del cell
        u = positions[0] - r0
        u2 = u**2
        pair = u2[0] * u2[1] + u2[1] * u2[2] + u2[2] * u2[0]
        return 0.5 * spring_eV_per_A2 * jnp.sum(u2) + quartic_eV_per_A4 * jnp.sum(u2**2) + coupling_eV_per_A4 * pair

    return energy_fn


def make_nan_potential(atoms=None):
    """Returns NaN everywhere except at the reference point's Hessian (for rollback tests)."""
    r0 = jnp.asarray(atoms.get_positions()) if atoms is not None else None

    def energy_fn(positions, cell):
        u = positions - r0
        e = 0.5 * jnp.sum(u**2)
        return jnp.where(jnp.sum(u**2) > 0, jnp.nan, 0.0) + e

    return energy_fn


def make_undefined_potential(atoms=None):
    """NaN everywhere, the reference structure included (a broken plug-in)."""

    def energy_fn(positions, cell):
        return jnp.nan * jnp.sum(positions)

    return energy_fn


def make_double_well_atom(atoms=None, spring_eV_per_A2=0.5, quartic_eV_per_A4=4.0):
    """One atom on a saddle of the harmonic expansion: V = -k/2 x^2 + lam x^4 + k/2 (y^2 + z^2),
    u = R - r0 (eV): one imaginary harmonic mode, stabilised by the quartic term."""
    r0 = jnp.asarray(atoms.get_positions()[0]) if atoms is not None else jnp.zeros(3)

    def energy_fn(positions, cell):
        del cell
        u = positions[0] - r0
        return 0.5 * spring_eV_per_A2 * (u[1] ** 2 + u[2] ** 2 - u[0] ** 2) + quartic_eV_per_A4 * u[0] ** 4

    return energy_fn


def make_einstein_phase(atoms=None, spring_eV_per_A2=1.0, static_eV_per_atom=0.0):
    """An Einstein crystal with a static energy per atom: V = N e0 + k/2 sum |R - R0|^2, eV
    (a "phase" with an analytic free energy, for the phase-comparison tests)."""
    r0 = jnp.asarray(atoms.get_positions())

    def energy_fn(positions, cell):
        del cell
        return r0.shape[0] * static_eV_per_atom + 0.5 * spring_eV_per_A2 * jnp.sum((positions - r0) ** 2)

    return energy_fn


def make_asymmetric_atom(atoms=None, spring_eV_per_A2=1.0, cubic_eV_per_A3=-0.6, quartic_eV_per_A4=1.0):
    """One atom in a well without inversion symmetry about r0, V = k/2 |u|^2 + g x^3 + lam x^4:
    zero-point motion shifts its mean position along x (the SCHA centroid test)."""
    r0 = jnp.asarray(atoms.get_positions()[0]) if atoms is not None else jnp.zeros(3)

    def energy_fn(positions, cell):
        del cell
        u = positions[0] - r0
        return 0.5 * spring_eV_per_A2 * jnp.sum(u**2) + cubic_eV_per_A3 * u[0] ** 3 + quartic_eV_per_A4 * u[0] ** 4

    return energy_fn
