"""Recipe ``detect`` (in progress, not registered yet): SSD object detection scored by mAP.

What exists: the SSD models (:mod:`.model`), box maths and matching (:mod:`.boxes`), the multibox
loss (:mod:`.loss`) and the post-process every runtime shares (:mod:`.postprocess`). It is not yet
in ``RECIPES``: it has no stages in dvc.yaml / params.yaml, so the every-recipe end-to-end test
could not run it.
"""
