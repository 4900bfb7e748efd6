# CPU benchmark (README, Results): nnPU step + per-batch prior pi_b = rho_L + (1 - rho_L) pi_U
# (rho_L: labelled share of the sampled batch). pi_U = hidden cells among the unlabeled
# samples (README, Choices; estimate_prior.py): RPN 32 of 17662 sampled unlabeled anchors
# -> 0.0018; RoI 48% of the sampled negatives (CE detector's proposals).
_base_ = './faster-rcnn_r18-c32_fpn_pu-nnpu_500i_synthetic-sparse30.py'
# PURoIHead: the ground-truth boxes mmdet adds as proposals stay out of the positive means
# (they are not a sample of the hidden cells; issue 17 item 3).
model = dict(
    rpn_head=dict(loss_cls=dict(prior=None, hidden_prior=0.0018)),
    roi_head=dict(type='PURoIHead', bbox_head=dict(loss_cls=dict(prior=None, hidden_prior=0.48))))
