# Table II model A (baseline): Voronoi labels only, two nets on the two halves, averaged.
_base_ = './scnet_r18-c32_vor-clu-cot-color_400i_synthetic.py'
model = dict(colorization_head=None, use_cotraining=False, use_cluster=False)
