# CPU benchmark (README, Results): the stock cross-entropy detector trained with Adam lr 1e-3,
# the optimiser of the pu-nnpu-hp-warmup-adam row, so that the PU loss is compared with
# cross-entropy under the same optimiser (det_sparse: `ce-adam`; issue 17, item 3). Same
# schedule otherwise (warm-up, x0.1 steps, gradient clipping); no weight decay.
_base_ = './faster-rcnn_r18-c32_fpn_ce_500i_mnfinder-sparse30.py'
optim_wrapper = dict(optimizer=dict(_delete_=True, type='Adam', lr=1e-3))
