"""Pure, jittable attack kernels as plug-ins: FGSM, PGD, APGD, FAB, Square
and the AutoAttack cascade (L-inf and L2).

This package imports nothing from `tinyrobust.models` or `tinyrobust.data`:
a model enters only as `apply_fn(variables, x) -> logits`.

    attack = make_pgd(apply_fn, norm='linf', steps=10, clip=(0.0, 1.0))
    x_adv = attack(variables, x, y, key, 8 / 255)        # [B, ...]

    # An eps grid in one compiled call, [n_eps, B, ...]; never retraces for
    # new eps values of the same shape.
    sweep = jax.jit(jax.vmap(attack, in_axes=(None, None, None, None, 0)))
    x_advs = sweep(variables, x, y, key, jnp.array([0.0, 2 / 255, 8 / 255]))

Flax models: `apply_fn = functools.partial(module.apply, train=False)` (eval
mode: batch-norm statistics frozen, no dropout; the variables stay an
argument, never closed over).

Attacking through a front-end. When the model consumes features computed from
a raw signal (MFCCs from audio, window statistics from IMU), compose the
front-end into `apply_fn` and the same kernels perturb the raw signal, which
is the physically meaningful threat (the adversary controls the sensor, not
the features); eps and `clip` are then in raw-signal units:

    def window_stats(x):                      # [B, T, C] -> [B, 2C]
      return jnp.concatenate([x.mean(1), x.var(1)], axis=-1)

    def apply_raw(variables, x_raw):          # model o frontend
      return feature_model.apply(variables, window_stats(x_raw), train=False)

    attack = make_pgd(apply_raw, steps=10, clip=(-4.0, 4.0))   # +-4 g
    x_raw_adv = attack(variables, x_raw, y, key, 0.05)

The front-end must be differentiable (written in JAX). Attacking in feature
space, as the original study did, is `make_pgd(feature_apply_fn)` on the
features themselves.

Traced inputs. Called with concrete arrays, every kernel validates them
first (`check_inputs`: finite x, eps finite and >= 0, labels in [0, K) for
the model's K classes) and raises a ValueError naming the bad value. Under an
outer `jax.jit`/`jax.vmap` (the eps-sweep recipe above) values cannot be
inspected, so only shapes and dtypes are checked; instead, an example whose
eps is negative, NaN or infinite, or whose label is outside [0, K), gets an
all-NaN `x_adv` (and `info['valid']` False, `info['success']` False), so a bad
eps or label shows up as NaN logits, never as a silent no-op that would
report robust accuracy equal to clean accuracy. `tinyrobust.evaluate` counts
non-finite adversarial inputs as failures and flags them. Call
`check_inputs(x, y, eps, num_classes=K)` on the host data before a jitted
sweep to get the ValueError instead.

Attacks are looked up by name: `get_attack(name, apply_fn, **options)`
returns an `Attack` record (name, JSON-able config, kernel) that is called
like the kernel; `list_attacks()` names the registered ones and
`register_attack(name, factory)` adds one (see `tinyrobust.attacks.registry`).

Step loop (`loop=` of PGD, APGD and Square; `tinyrobust.attacks.loops`):
'auto' (the default, also None) is `default_loop()` for the backend: on CPU
'host', a Python loop over one jitted chunk of `chunk` steps with the carry
donated (XLA:CPU runs a rolled loop ~2.3x slower per step, and an unrolled
one compiles in time growing with the steps); on GPU/TPU 'fori'. Under an
outer `jax.jit`/`jax.vmap` (the eps-sweep recipe above) 'host' runs as
'fori', so the kernels stay pure, jittable and vmappable; to keep the
host-driven speed, call the kernel itself (it jits its own pieces) rather
than `jax.jit(attack)`. 'fori', 'scan', 'unroll' and an int unroll factor
are also accepted; every mode gives the same output for the same key (see
`DEFAULT_LOOP`, `loops.DEFAULT_CHUNK` and experiments/bench_attacks.py).
"""

from tinyrobust.attacks.apgd import apgd_checkpoints
from tinyrobust.attacks.apgd import make_apgd
from tinyrobust.attacks.apgd import make_apgd_ce
from tinyrobust.attacks.apgd import make_apgd_dlr
from tinyrobust.attacks.apgd import make_apgd_t
from tinyrobust.attacks.autoattack import autoattack_stages
from tinyrobust.attacks.autoattack import make_autoattack
from tinyrobust.attacks.checks import check_inputs
from tinyrobust.attacks.checks import check_shapes
from tinyrobust.attacks.checks import LOOPS
from tinyrobust.attacks.fab import boundary_projection
from tinyrobust.attacks.fab import make_fab
from tinyrobust.attacks.fab import make_fab_t
from tinyrobust.attacks.loops import run_loop
from tinyrobust.attacks.losses import get_loss
from tinyrobust.attacks.losses import label_margin
from tinyrobust.attacks.losses import LOSSES
from tinyrobust.attacks.momentum import make_mifgsm
from tinyrobust.attacks.norms import NORMS
from tinyrobust.attacks.norms import per_example_norm
from tinyrobust.attacks.norms import project
from tinyrobust.attacks.pgd import default_loop
from tinyrobust.attacks.pgd import DEFAULT_LOOP
from tinyrobust.attacks.pgd import make_fgsm
from tinyrobust.attacks.pgd import make_pgd
from tinyrobust.attacks.registry import as_attack
from tinyrobust.attacks.registry import Attack
from tinyrobust.attacks.registry import attack_options
from tinyrobust.attacks.registry import get_attack
from tinyrobust.attacks.registry import list_attacks
from tinyrobust.attacks.registry import register_attack
from tinyrobust.attacks.registry import unregister_attack
from tinyrobust.attacks.snr import eps_from_snr_db
from tinyrobust.attacks.snr import ratio_from_snr_db
from tinyrobust.attacks.snr import relative_attack
from tinyrobust.attacks.snr import relative_eps
from tinyrobust.attacks.snr import snr_db
from tinyrobust.attacks.snr import snr_db_from_ratio
from tinyrobust.attacks.snr import universal_eps_from_snr_db
from tinyrobust.attacks.square import make_square
from tinyrobust.attacks.square import square_p
from tinyrobust.attacks.threat import Threat
from tinyrobust.attacks.universal import apply_universal
from tinyrobust.attacks.universal import fit_universal
from tinyrobust.attacks.universal import load_universal
from tinyrobust.attacks.universal import save_universal
from tinyrobust.attacks.universal import UniversalPerturbation

__all__ = [
    'check_inputs', 'check_shapes', 'LOOPS', 'get_loss', 'label_margin',
    'LOSSES', 'NORMS', 'per_example_norm', 'project', 'default_loop',
    'DEFAULT_LOOP', 'make_fgsm', 'make_pgd', 'as_attack', 'Attack',
    'attack_options', 'get_attack', 'list_attacks', 'register_attack',
    'unregister_attack', 'apgd_checkpoints', 'make_apgd', 'make_apgd_ce',
    'make_apgd_dlr', 'make_apgd_t', 'make_autoattack', 'make_square',
    'square_p', 'Threat',
    # Issue 25: transfer-oriented attacks, universal perturbations, dB budgets.
    'make_mifgsm', 'eps_from_snr_db', 'ratio_from_snr_db', 'relative_attack',
    'relative_eps', 'snr_db', 'snr_db_from_ratio', 'universal_eps_from_snr_db',
    'apply_universal', 'fit_universal', 'load_universal', 'save_universal',
    'UniversalPerturbation',
    # Issue 22: FAB / FAB-T and the AutoAttack stages for a scheduler.
    'make_fab', 'make_fab_t', 'boundary_projection', 'autoattack_stages',
]
