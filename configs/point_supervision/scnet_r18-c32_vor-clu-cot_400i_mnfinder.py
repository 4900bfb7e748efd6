# Table II model C: co-training without colourisation. The EMA refresh and the gradient
# shares logged every 10 iterations (gshare_*) are model D's (see its header).
_base_ = './scnet_r18-c32_vor-clu-cot-color_400i_mnfinder.py'
model = dict(colorization_head=None)
