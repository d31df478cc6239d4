"""Training, fine-tuning and evaluating the promptable network (``ctsam train`` / ``ctsam evaluate``).

Modules (lower ones never import higher ones):

* :mod:`~ctsam.training.data` -- TSV of (CT, label map) pairs, resampled once per case to the model
  frame (RAI, 1.5 mm) and cached; deterministic 64^3 patch sampling per structure;
* :mod:`~ctsam.training.clicks` -- simulated clicks (most interior point, then the centre of the
  largest error region);
* :mod:`~ctsam.training.losses` -- 0.2 focal + 0.8 Dice, cross-patch heatmap MSE;
* :mod:`~ctsam.training.distributed` -- DDP set-up from torchrun or SLURM environment variables;
* :mod:`~ctsam.training.loop` -- AdamW + warm-up, gradient clipping, AMP on GPU, checkpoints that
  resume exactly, metrics log;
* :mod:`~ctsam.training.evaluate` -- the interactive protocol (Dice after k clicks, NoC) and the
  automatic seed -> refine pipeline against ground truth;
* :mod:`~ctsam.training.demo` -- the shipped demo model (micro variant on demo phantoms).
"""
