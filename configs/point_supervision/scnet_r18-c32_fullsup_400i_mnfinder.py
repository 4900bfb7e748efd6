# Upper bound (Table I, "fully-supervised ResUNet"): the same two nets and halves trained
# with cross-entropy on the full masks, no point labels, no colourisation.
_base_ = './scnet_r18-c32_vor-clu-cot-color_400i_mnfinder.py'
model = dict(colorization_head=None, use_cotraining=False, supervision='full')
