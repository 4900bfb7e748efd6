# Model D with the paper's literal colour weight, beta = 0.1 (1 - N/Nmax)^2 (eta = 1,
# eps = 0.1), instead of the normalised 30% share of the gradient norms.
_base_ = './scnet_r18-c32_vor-clu-cot-color_400i_synthetic.py'
model = dict(color_share=None, eps=0.1)
