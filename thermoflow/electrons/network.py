"""A periodic, permutation-equivariant neural wavefunction for electrons with fixed protons (FermiNet style).

ln psi = ln|sum_d det Phi^d_up det Phi^d_down| + ln J  (the RPA Jastrow with e-e and e-p cusps, :func:`jastrow.log_jastrow`)

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

Options (:func:`make_periodic_network`): several determinants; the singlet-pairing geminal det G over
occupied + extra plane waves (down spin at -k), which starts at the Slater-Jastrow state; exponential
atomic envelopes sum_I exp(-sigma d_iI) for atoms and molecules in large cells.

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

from thermoflow.electrons.jastrow import Wavefunction, jastrow_params, log_jastrow
from thermoflow.electrons.plane_waves import inversion_symmetric, real_orbitals
from thermoflow.lattice import fractional_phases, pair_inputs_from_phases, pair_phases, pair_phases_within


def _dense(key, n_in, n_out, scale=1.0):
    w = jax.random.normal(key, (n_in, n_out)) * scale / np.sqrt(n_in)
    return {"w": w, "b": jnp.zeros(n_out)}


def _orbital_columns(kvectors: np.ndarray, complex_orbitals: bool):
    """``(k (m, 3), phase shift (m,), column -> amplitude index (m,), number of amplitudes)`` of a k set:
    complex columns exp(i k . x), one amplitude each, or the real columns cos(k . x - shift) of
    :func:`thermoflow.electrons.plane_waves.real_orbitals`, one amplitude per +-k pair (k = 0 alone)."""
    kvectors = np.asarray(kvectors, dtype=np.float64).reshape(-1, 3)
    if complex_orbitals:
        k, shift, pair = kvectors, np.zeros(len(kvectors)), np.arange(len(kvectors))
    elif len(kvectors):
        k, shift = real_orbitals(kvectors)
        pair = np.cumsum(shift == 0.0) - 1  # real_orbitals lists k = 0 once and each pair as (cos, sin)
    else:
        k, shift, pair = np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=int)
    return jnp.asarray(k), jnp.asarray(shift), jnp.asarray(pair), int(pair[-1]) + 1 if len(pair) else 0


def make_periodic_network(
    cell: np.ndarray, kvectors_up: np.ndarray, kvectors_down: np.ndarray, *, n_layers: int = 2, one_body: int = 32,
    two_body: int = 8, n_determinants: int = 1, envelope: str = "plane_wave", geminal_kvectors: np.ndarray | None = None,
    seed: int = 0, network_precision: str = "float64",
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
        n_determinants: terms of psi = sum_d det Phi^d_up det Phi^d_down (or sum_d det G^d); the terms
            share the features and the backflow and differ in their amplitude modulations w^d (and, with
            the atomic envelope, their exponents; with the geminal, their pairing amplitudes); d >= 1 start
            from small random w^d (identical terms would get identical gradients and stay identical).
        envelope: ``"plane_wave"`` (the orbitals above) or ``"atomic"``: each orbital column k is
            multiplied by sum_I exp(-sigma_k^d d_iI) over the protons (smooth periodic distance; one
            exponent per +-k pair, like w, and determinant, shared by all protons so psi stays invariant
            under proton permutations and common translations; sigma = 1 at start: hydrogen 1s), and
            the Jastrow drops its electron-proton term (the envelope carries the cusp, -sigma_k at a
            proton far from the others). For atoms and molecules in large cells (FermiNet's exponential
            envelopes); needs protons.
        geminal_kvectors: None (spin determinants) or extra wavevectors (m, 3) beyond ``kvectors_up``
            (+-k symmetric at zero twist) for the singlet-pairing geminal
            psi = det G, G_ij = sum_a c_a Phi_a(r_i up) Phi~_a(r_j down), over the orbitals of
            ``kvectors_up`` + ``geminal_kvectors`` (each with its modulation, backflow and envelope); the
            down spin's orbitals are those of -k (exp(-i k . x); the same cos/sin at zero twist), so the
            pair function sum_a c_a exp(i k_a . (r - r')) is translation invariant and a +-k pair's cos/sin
            share one c. c starts at 1 on the occupied orbitals and 0 on the extra ones: det G =
            det Phi_up det Phi_down, the Slater-Jastrow start at zero twist. Needs equal spin counts.
        seed: initialisation seed.
        network_precision: ``"float64"`` or ``"float32"``: the dtype of the one- and two-electron streams
            (the pair inputs are computed in float64 and rounded; the features return to float64 before the
            backflow, orbitals, determinants, Jastrow and every accumulation, which stay float64). The
            parameters are stored in float64 either way, so a run may switch.

    Returns:
        A :class:`thermoflow.electrons.jastrow.Wavefunction`; ``log_psi(params, electrons (n_e, 3),
        protons (n_p, 3)) -> (sign or complex phase, ln|psi|)``, the first ``len(kvectors_up)`` electrons spin up.

    Raises:
        ValueError: ``n_layers`` or ``n_determinants`` < 1, an unknown ``envelope``, a geminal with unequal
            spin counts; at call time, the atomic envelope without protons.

    References: doi:10.1103/PhysRevResearch.2.033429 (FermiNet, envelopes); doi:10.1038/s41467-022-35627-1;
    M. Casula and S. Sorella, J. Chem. Phys. 119, 6500 (2003), doi:10.1063/1.1604379 (geminal / AGP wavefunctions).
    """
    if n_layers < 1 or n_determinants < 1:
        raise ValueError(f"n_layers and n_determinants must be >= 1, got {n_layers} and {n_determinants}")
    if envelope not in ("plane_wave", "atomic"):
        raise ValueError(f"envelope must be 'plane_wave' or 'atomic', got {envelope!r}")
    if network_precision not in ("float64", "float32"):
        raise ValueError(f"network_precision must be 'float64' or 'float32', got {network_precision!r}")
    stream_dtype = jnp.float32 if network_precision == "float32" else jnp.float64
    atomic, geminal = envelope == "atomic", geminal_kvectors is not None
    cell = np.asarray(cell, dtype=np.float64)
    cell_j, inverse_j = jnp.asarray(cell), jnp.asarray(np.linalg.inv(cell))
    n_up, n_down = len(np.asarray(kvectors_up).reshape(-1, 3)), len(np.asarray(kvectors_down).reshape(-1, 3))
    if geminal:
        if n_up != n_down:
            raise ValueError(f"the geminal pairs every up electron with a down one: needs equal spin counts, got {n_up} and {n_down}")
        columns = np.concatenate([np.asarray(kvectors_up, dtype=np.float64).reshape(-1, 3),
                                  np.asarray(geminal_kvectors, dtype=np.float64).reshape(-1, 3)])
        twisted = not inversion_symmetric(columns)
        k_up, shift_up, pair_up, n_amplitudes_up = _orbital_columns(columns, twisted)
        k_down, shift_down, pair_down, n_amplitudes_down = k_up, shift_up, pair_up, n_amplitudes_up
        n_occupied_amplitudes = int(pair_up[n_up - 1]) + 1
    else:
        twisted = not (inversion_symmetric(kvectors_up) and inversion_symmetric(kvectors_down))
        k_up, shift_up, pair_up, n_amplitudes_up = _orbital_columns(kvectors_up, twisted)
        k_down, shift_down, pair_down, n_amplitudes_down = _orbital_columns(kvectors_down, twisted)

    def init():
        keys = jax.random.split(jax.random.PRNGKey(seed), 2 * n_layers + 4)
        layers = []
        n_in = 7  # one-body input: the mean electron-proton pair features
        for layer in range(n_layers):
            width_in = n_in + 2 * (7 if layer == 0 else two_body) + 2 * n_in
            layers.append({"one": _dense(keys[2 * layer], width_in, one_body),
                           "two": _dense(keys[2 * layer + 1], 7 if layer == 0 else two_body, two_body)})
            n_in = one_body

        def modulation(key, n_amplitudes):  # determinant 0: zero (the Slater-Jastrow start); the others small random
            w = 0.1 * jax.random.normal(key, (n_determinants, one_body, n_amplitudes)) / np.sqrt(one_body)
            return w.at[0].set(0.0)

        params = {
            "layers": layers,
            "envelope_up": modulation(keys[-2], n_amplitudes_up), "envelope_down": modulation(keys[-1], n_amplitudes_down),
            "backflow": jnp.zeros((one_body, 3)),
            **jastrow_params(),
        }
        if atomic:
            params["exponent_up"] = jnp.ones((n_determinants, n_amplitudes_up))
            params["exponent_down"] = jnp.ones((n_determinants, n_amplitudes_down))
        if geminal:
            params["pairing"] = jnp.broadcast_to((jnp.arange(n_amplitudes_up) < n_occupied_amplitudes).astype(jnp.float64),
                                                 (n_determinants, n_amplitudes_up))
        return params

    def pair_geometry(electrons, protons):
        """The pair inputs of the streams and the distances of the Jastrow factor, from one set of per-particle phases
        (:func:`thermoflow.lattice.pair_phases`): ``(e-e inputs (n, n, 7) zero on the diagonal, mean e-p inputs (n, 7),
        e-e distances (n, n) with a placeholder diagonal, e-p distances (n, n_p))``."""
        n = electrons.shape[0]
        self_pair = jnp.eye(n, dtype=bool)[:, :, None]
        phases_e = fractional_phases(electrons, cell_j, inverse_j)
        pair_ee = pair_inputs_from_phases(*pair_phases_within(phases_e), cell_j)  # [i, j]: the displacement r_j - r_i
        if protons.shape[0] > 0:
            sin_ep, cos_ep = pair_phases(fractional_phases(protons, cell_j, inverse_j), phases_e)  # [I, i]: r_i - R_I
            pair_ep = pair_inputs_from_phases(sin_ep.swapaxes(0, 1), cos_ep.swapaxes(0, 1), cell_j)  # (n, n_p, 7)
            h, d_ep = jnp.mean(pair_ep, axis=1), pair_ep[..., 6]
        else:
            h, d_ep = jnp.zeros((n, 7), electrons.dtype), jnp.zeros((n, 0), electrons.dtype)
        return jnp.where(self_pair, 0.0, pair_ee), h, pair_ee[..., 6], d_ep

    def features(params, pairs, h):
        n = pairs.shape[0]
        g, h = pairs.astype(stream_dtype), h.astype(stream_dtype)
        up = jnp.arange(n) < n_up
        for layer in params["layers"]:
            layer = jax.tree.map(lambda w: w.astype(stream_dtype), layer)
            others_up = jnp.sum(jnp.where(up[None, :, None], g, 0.0), axis=1) / max(n_up, 1)
            others_down = jnp.sum(jnp.where(up[None, :, None], 0.0, g), axis=1) / max(n_down, 1)
            mean_up = jnp.broadcast_to(jnp.sum(jnp.where(up[:, None], h, 0.0), axis=0) / max(n_up, 1), h.shape)
            mean_down = jnp.broadcast_to(jnp.sum(jnp.where(up[:, None], 0.0, h), axis=0) / max(n_down, 1), h.shape)
            inputs = jnp.concatenate([h, others_up, others_down, mean_up, mean_down], axis=-1)
            new_h = jnp.tanh(inputs @ layer["one"]["w"] + layer["one"]["b"])
            h = new_h + h if new_h.shape == h.shape else new_h
            new_g = jnp.tanh(g @ layer["two"]["w"] + layer["two"]["b"])
            g = new_g + g if new_g.shape == g.shape else new_g
        return h.astype(jnp.float64)

    def log_psi(params, electrons, protons=None):
        protons = jnp.zeros((0, 3), electrons.dtype) if protons is None else protons
        if atomic and protons.shape[0] == 0:
            raise ValueError("the atomic envelope needs protons")
        pairs, one_body, d_ee, d_ep = pair_geometry(electrons, protons)
        h = features(params, pairs, one_body)
        shifted = electrons + h @ params["backflow"]

        def orbitals(x, hs, d, k, shift, modulation, exponent, pair, k_sign=1.0):
            """(n_det, n, m) orbital matrices of one spin's electrons; exp(i k_sign k . x) columns when twisted."""
            waves = jnp.exp(1j * k_sign * (x @ k.T)) if twisted else jnp.cos(x @ k.T - shift[None, :])
            phi = waves[None] * (1.0 + jnp.einsum("if,dfa->dia", hs, modulation)[:, :, pair])
            if atomic:
                phi = phi * jnp.sum(jnp.exp(-exponent[:, None, pair, None] * d[None, :, None, :]), axis=-1)
            return phi

        up = (shifted[:n_up], h[:n_up], d_ep[:n_up] if atomic else None, k_up, shift_up, params["envelope_up"],
              params.get("exponent_up"), pair_up)
        down = (shifted[n_up:], h[n_up:], d_ep[n_up:] if atomic else None, k_down, shift_down, params["envelope_down"],
                params.get("exponent_down"), pair_down)
        if geminal:  # det G, G_ij = sum_a c_a Phi_a(up i) Phi_a(down j) with the down spin at -k
            pairing = jnp.einsum("dia,da,dja->dij", orbitals(*up), params["pairing"][:, pair_up], orbitals(*down, k_sign=-1.0))
            signs, logs = jnp.linalg.slogdet(pairing)
        else:
            def spin_terms(*args):
                """(phases or signs (n_det,), ln|det| (n_det,)) of one spin's determinants."""
                if args[3].shape[0] == 0:
                    return jnp.full(n_determinants, 1.0 + 0.0j if twisted else 1.0), jnp.zeros(n_determinants)
                return jnp.linalg.slogdet(orbitals(*args))

            (sign_up, log_up), (sign_down, log_down) = spin_terms(*up), spin_terms(*down)
            signs, logs = sign_up * sign_down, log_up + log_down
        if n_determinants == 1:
            sign, log_abs = signs[0], logs[0]
        else:  # psi = sum_d sign_d exp(log_d), scaled by the largest term
            top = jax.lax.stop_gradient(jnp.max(logs))
            total = jnp.sum(signs * jnp.exp(logs - top))
            sign, log_abs = total / jnp.abs(total), top + jnp.log(jnp.abs(total))
        jastrow_protons = protons[:0] if atomic else protons
        distances = (d_ee, d_ep[:, :0] if atomic else d_ep)
        return sign, log_abs + log_jastrow(params, electrons, jastrow_protons, n_up, cell_j, distances=distances)

    return Wavefunction(init=init, log_psi=log_psi)
