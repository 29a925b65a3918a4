"""thermoflow: free energies of light-element matter with nuclear quantum and thermal effects.

Layers (data flows down): ``structures`` and ``potentials`` -> ``phonons`` -> ``nct`` ->
``analysis`` -> ``workflows`` / ``cli``. See ``docs/`` and the project README.
"""

import jax

# Free energies are differences of large numbers: thermoflow computes in float64 throughout.
jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
