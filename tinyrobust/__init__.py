"""tinyrobust: adversarial robustness and MCU-aware search for TinyML in JAX."""

__version__ = '0.1.0'
