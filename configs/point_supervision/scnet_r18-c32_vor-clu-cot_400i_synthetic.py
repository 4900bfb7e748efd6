# Table II model C: co-training without colourisation.
_base_ = './scnet_r18-c32_vor-clu-cot-color_400i_synthetic.py'
model = dict(colorization_head=None)
