"""The training recipes every artefact starts from, per scale, in one place.

Each entry is a dict of :class:`jaxhfc.train.TrainConfig` fields. ``Context.config`` builds a
config as ``TrainConfig(**BASE[scale], dataset=..., seed=..., **artefact overrides)``.
An artefact's own per-scale settings (radii, epochs, variants) live at the top of its driver
module in a ``SETTINGS`` dict with the same three keys.

* ``full``: the paper code's vanilla set-up on CIFAR-10 (Adam 1e-4, batch 100, 100 epochs, no
  augmentation, no BatchNorm, paper input scaling).
* ``quick``: minutes on a 2-core CPU on the built-in synthetic data.
* ``tiny``: seconds; smoke tests and CI.
"""

from __future__ import annotations

#: M_natural (the vanilla model), per scale.
BASE: dict[str, dict] = {
    "full": dict(norm="none", epochs=100, batch_size=100, learning_rate=1e-4, eval_every=1,
                 eval_radii=(4, 8, 12, 16), checkpoint_every=10),
    "quick": dict(model="small_cnn", width=16, norm="none", dtype="float32", num_train=4096, num_test=1000,
                  epochs=10, batch_size=64, learning_rate=3e-3, eval_batch_size=1000, eval_every=2,
                  eval_radii=(4, 8, 12, 16), eval_train_subset=500, checkpoint_every=5),
    "tiny": dict(model="small_cnn", width=8, norm="none", dtype="float32", num_train=256, num_test=192,
                 epochs=2, batch_size=64, learning_rate=3e-3, eval_batch_size=192, eval_every=1,
                 eval_radii=(4,), eval_train_subset=128, checkpoint_every=1),
}

#: M_adversarial: Madry PGD training (paper: Linf eps 0.03, 10 steps of 0.003, no random
#: start, pad-4 crop and flip), as overrides of BASE, per scale.
ADVERSARIAL: dict[str, dict] = {
    "full": dict(adv_eps=0.03, adv_steps=10, adv_step_size=0.003, adv_random_start=False,
                 augment_crop=True, augment_flip=True),
    "quick": dict(adv_eps=0.03, adv_steps=5, adv_step_size=0.008, adv_random_start=False,
                  augment_crop=True, augment_flip=True),
    "tiny": dict(adv_eps=0.03, adv_steps=2, adv_step_size=0.015, adv_random_start=False,
                 augment_crop=True, augment_flip=True),
}
