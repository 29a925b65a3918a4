"""A periodic, permutation-equivariant neural wavefunction for electrons with fixed protons (FermiNet style).

ln psi = ln|det Phi_up det Phi_down| + ln J  (the RPA Jastrow with e-e and e-p cusps, :func:`jastrow.log_jastrow`)

with orbitals Phi_ik = cos(k_k . (r_i + B h_i) - shift_k) (1 + w_[k] . h_i): the plane waves of the
closed-shell determinant at backflowed coordinates r_i + B h_i (a displacement learned from the
electron's features h_i), times an amplitude modulation shared by the cos/sin partners of each
+-k pair (w_[k]). Sharing it, and the translation invariance of h_i, keep |psi| invariant under a
common translation of electrons and protons (the pair's cos/sin columns rotate into each other,
which leaves the determinant unchanged); k . L in 2 pi Z keeps every orbital periodic. With
twisted k sets (k = G + k_s, :mod:`thermoflow.electrons.twists`; not +-k symmetric) the orbitals are
complex, Phi_ik = exp(i k_k . (r_i + B h_i)) (1 + w_k . h_i) with one amplitude per column (a common
translation t multiplies column k by exp(i k_k . t): psi changes by a phase only), and moving an
electron by a lattice vector L multiplies psi by exp(i k_s . L) (h_i is periodic). At
initialisation B = w = 0: exactly the Slater-Jastrow wavefunction. The features come from
interacting streams, as in FermiNet / DeepSolid:

* inputs, all periodic and translation invariant for electrons and protons moved together:
  electron-electron pairs (sin 2 pi s, cos 2 pi s, d) of the fractional displacement s and the
  smooth periodic distance d, and electron-proton pairs likewise, averaged over the protons into
  each electron's one-body input (so the wavefunction is conditioned on the proton configuration
  X and invariant under proton permutations);
* L layers: h_i <- h_i + tanh(W [h_i, mean_{j up} g_ij, mean_{j down} g_ij, mean_{up} h, mean_{down} h]),
  g_ij <- g_ij + tanh(V g_ij): equivariant under permutations of same-spin electrons, so the
  determinants make psi antisymmetric.

Tested: antisymmetry, periodicity in every electron (the twist phase exp(i k_s . L) at a twist),
invariance under proton permutations and a common lattice translation, the Slater-Jastrow limit
at initialisation, VMC optimisation, the complex VMC gradient against the exact energy.

References: D. Pfau, J. S. Spencer, A. G. de G. Matthews and W. M. C. Foulkes, Phys. Rev. Research
2, 033429 (2020), doi:10.1103/PhysRevResearch.2.033429 (FermiNet); X. Li, Z. Li and J. Chen, Nat.
Commun. 13, 7895 (2022), doi:10.1038/s41467-022-35627-1 (DeepSolid: periodic features).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.electrons.jastrow import Wavefunction, jastrow_params, log_jastrow, periodic_distance
from thermoflow.electrons.plane_waves import inversion_symmetric, real_orbitals


def _pair_features(displacements, cell, inverse_cell):
    """(..., 7): sin and cos of 2 pi x the fractional displacement and the periodic distance."""
    frac = displacements @ inverse_cell
    return jnp.concatenate([jnp.sin(2 * jnp.pi * frac), jnp.cos(2 * jnp.pi * frac),
                            periodic_distance(displacements, cell)[..., None]], axis=-1)


def _dense(key, n_in, n_out, scale=1.0):
    w = jax.random.normal(key, (n_in, n_out)) * scale / np.sqrt(n_in)
    return {"w": w, "b": jnp.zeros(n_out)}


def make_periodic_network(
    cell: np.ndarray, kvectors_up: np.ndarray, kvectors_down: np.ndarray, *, n_layers: int = 2, one_body: int = 32,
    two_body: int = 8, seed: int = 0,
) -> Wavefunction:
    """The wavefunction of the module docstring.

    Args:
        cell: (3, 3) lattice vectors as rows, bohr.
        kvectors_up, kvectors_down: plane-wave vectors of each spin, 1/bohr: closed shells
            (:func:`thermoflow.electrons.plane_waves.closed_shell_kvectors`, real orbitals) or twisted sets
            (:func:`thermoflow.electrons.twists.twisted_kvectors`, complex orbitals; used when either set is
            not +-k symmetric).
        n_layers: interaction layers.
        one_body, two_body: widths of the one- and two-electron streams.
        seed: initialisation seed.

    Returns:
        A :class:`thermoflow.electrons.jastrow.Wavefunction`; ``log_psi(params, electrons (n_e, 3),
        protons (n_p, 3)) -> (sign or complex phase, ln|psi|)``, the first ``len(kvectors_up)`` electrons spin up.

    Raises:
        ValueError: ``n_layers`` < 1.

    References: doi:10.1103/PhysRevResearch.2.033429; doi:10.1038/s41467-022-35627-1.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    cell = np.asarray(cell, dtype=np.float64)
    cell_j, inverse_j = jnp.asarray(cell), jnp.asarray(np.linalg.inv(cell))
    twisted = not (inversion_symmetric(kvectors_up) and inversion_symmetric(kvectors_down))
    if twisted:  # complex orbitals exp(i k . x), one amplitude per column
        k_up, k_down = (jnp.asarray(np.asarray(k, dtype=np.float64).reshape(-1, 3)) for k in (kvectors_up, kvectors_down))
        shift_up, shift_down = jnp.zeros(k_up.shape[0]), jnp.zeros(k_down.shape[0])
        pair_up, pair_down = jnp.arange(k_up.shape[0]), jnp.arange(k_down.shape[0])
    else:
        k_up, shift_up = (jnp.asarray(a) for a in real_orbitals(kvectors_up))
        k_down, shift_down = (jnp.asarray(a) for a in real_orbitals(kvectors_down))
        # the column -> +-k pair map: real_orbitals lists k = 0 once and each pair as (cos, sin)
        pair_up, pair_down = (jnp.asarray(np.cumsum(np.asarray(shift) == 0.0) - 1) for shift in (shift_up, shift_down))
    n_up, n_down = int(k_up.shape[0]), int(k_down.shape[0])
    n_amplitudes_up, n_amplitudes_down = (int(np.asarray(pair)[-1]) + 1 if len(pair) else 0 for pair in (pair_up, pair_down))

    def init():
        keys = jax.random.split(jax.random.PRNGKey(seed), 2 * n_layers + 2)
        layers = []
        n_in = 7  # one-body input: the mean electron-proton pair features
        for layer in range(n_layers):
            width_in = n_in + 2 * (7 if layer == 0 else two_body) + 2 * n_in
            layers.append({"one": _dense(keys[2 * layer], width_in, one_body),
                           "two": _dense(keys[2 * layer + 1], 7 if layer == 0 else two_body, two_body)})
            n_in = one_body
        return {
            "layers": layers,
            "envelope_up": jnp.zeros((one_body, n_amplitudes_up)), "envelope_down": jnp.zeros((one_body, n_amplitudes_down)),
            "backflow": jnp.zeros((one_body, 3)),
            **jastrow_params(),
        }

    def features(params, electrons, protons):
        n = electrons.shape[0]
        self_pair = jnp.eye(n, dtype=bool)[:, :, None]
        displacements = jnp.where(self_pair, 0.5, electrons[None, :, :] - electrons[:, None, :])  # no d = 0 in the derivatives
        pairs = jnp.where(self_pair, 0.0, _pair_features(displacements, cell_j, inverse_j))  # (n, n, 7), zero on the diagonal
        if protons.shape[0] > 0:
            h = jnp.mean(_pair_features(electrons[:, None, :] - protons[None, :, :], cell_j, inverse_j), axis=1)
        else:
            h = jnp.zeros((n, 7), electrons.dtype)
        g = pairs
        up = jnp.arange(n) < n_up
        for layer in params["layers"]:
            others_up = jnp.sum(jnp.where(up[None, :, None], g, 0.0), axis=1) / max(n_up, 1)
            others_down = jnp.sum(jnp.where(up[None, :, None], 0.0, g), axis=1) / max(n_down, 1)
            mean_up = jnp.broadcast_to(jnp.sum(jnp.where(up[:, None], h, 0.0), axis=0) / max(n_up, 1), h.shape)
            mean_down = jnp.broadcast_to(jnp.sum(jnp.where(up[:, None], 0.0, h), axis=0) / max(n_down, 1), h.shape)
            inputs = jnp.concatenate([h, others_up, others_down, mean_up, mean_down], axis=-1)
            new_h = jnp.tanh(inputs @ layer["one"]["w"] + layer["one"]["b"])
            h = new_h + h if new_h.shape == h.shape else new_h
            new_g = jnp.tanh(g @ layer["two"]["w"] + layer["two"]["b"])
            g = new_g + g if new_g.shape == g.shape else new_g
        return h

    def log_psi(params, electrons, protons=None):
        protons = jnp.zeros((0, 3), electrons.dtype) if protons is None else protons
        h = features(params, electrons, protons)
        shifted = electrons + h @ params["backflow"]

        def log_det(x, hs, k, shift, envelope, pair):
            if k.shape[0] == 0:
                return jnp.asarray(1.0 + 0.0j if twisted else 1.0), jnp.asarray(0.0)
            waves = jnp.exp(1j * (x @ k.T)) if twisted else jnp.cos(x @ k.T - shift[None, :])
            return jnp.linalg.slogdet(waves * (1.0 + (hs @ envelope)[:, pair]))

        sign_up, log_up = log_det(shifted[:n_up], h[:n_up], k_up, shift_up, params["envelope_up"], pair_up)
        sign_down, log_down = log_det(shifted[n_up:], h[n_up:], k_down, shift_down, params["envelope_down"], pair_down)
        return sign_up * sign_down, log_up + log_down + log_jastrow(params, electrons, protons, n_up, cell_j)

    return Wavefunction(init=init, log_psi=log_psi)
