# Focal exclusive cross-entropy (Panteli et al. 2021, eq. 8): focal re-weighting of the
# unannotated cells only, alpha 0.2 / gamma 0.1 (the authors' package).
_base_ = './yollo_r18-c32_ece_300i_synthetic-sparse30.py'
model = dict(bbox_head=dict(loss_cls=dict(use_focal=True)))
