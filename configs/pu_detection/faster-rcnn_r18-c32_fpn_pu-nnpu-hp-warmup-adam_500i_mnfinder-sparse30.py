# CPU benchmark (README, Results): pu-nnpu-hp-warmup trained with Adam lr 1e-3, the paper's
# optimiser (sect. 3.1), instead of SGD 0.02, with which PU diverged on mnfinder (issue 17,
# item 3). Same schedule otherwise (warm-up, x0.1 steps, gradient clipping); no weight decay.
_base_ = './faster-rcnn_r18-c32_fpn_pu-nnpu-hp-warmup_500i_mnfinder-sparse30.py'
optim_wrapper = dict(optimizer=dict(_delete_=True, type='Adam', lr=1e-3))
