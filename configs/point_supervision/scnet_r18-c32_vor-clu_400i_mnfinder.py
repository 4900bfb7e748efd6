# Table II model B: Voronoi + cluster labels, two nets on the two halves, averaged at test.
_base_ = './scnet_r18-c32_vor-clu-cot-color_400i_mnfinder.py'
model = dict(colorization_head=None, use_cotraining=False)
