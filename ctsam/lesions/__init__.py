"""The lesion stage: one-click tumour segmentation (3DSAM-adapter style) on the CT grid.

* :mod:`ctsam.lesions.clicks` -- ``CLICKS.tsv`` (lesion_id, x, y, z LPS mm, label), checks, seeds -> clicks;
* :mod:`ctsam.lesions.patch` -- the model's patch grid around a click, sampling and pasting back;
* :mod:`ctsam.lesions.engine` -- per click: patch, normalise, forward, paste; overlaps resolved;
* :mod:`ctsam.lesions.measures` -- volume, RECIST diameters, 3-D diameter, centroid, containing structure;
* :mod:`ctsam.lesions.models` -- which model (``--checkpoint [LABEL=]MODEL``) segments which click;
* :mod:`ctsam.lesions.writer` -- ``LESIONS.nii.gz`` (+ label table) and the ``LESIONS.json`` sidecar.

Models are reached only through :mod:`ctsam.model` (``load_model``); see docs/lesions.md.
"""
