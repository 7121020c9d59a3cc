"""The names of CLADE's loss terms, in one place and without torch.

:data:`LOSS_NAMES` is the order of the loss vector one training step returns
(:class:`CLADE.training.step.TrainStep`), the keys of the ``losses`` dicts in the ``step`` and
``epoch`` events (:mod:`CLADE.training.events`) and the curves of the training plot
(:mod:`CLADE.training.plot`); readers such as the Slicer Train tab can import it without torch.

Example:
    >>> LOSS_NAMES[:3], len(LOSS_NAMES)
    (('g_total', 'adv', 'cyc'), 9)
"""

from __future__ import annotations

#: ``g_total`` (what the generators minimise), its terms ``adv`` (adversarial), ``cyc`` (cycle),
#: ``ident`` (identity), ``gmap`` (gradient mapping), the discriminators' ``d_x`` and ``d_y``,
#: and the safeguards beyond the paper, ``paired`` and ``dc`` (data consistency).
LOSS_NAMES = ("g_total", "adv", "cyc", "ident", "gmap", "d_x", "d_y", "paired", "dc")

#: Adversarial losses :func:`CLADE.training.losses.adversarial_loss` implements.
ADVERSARIAL_KINDS = ("bce", "lsgan")
