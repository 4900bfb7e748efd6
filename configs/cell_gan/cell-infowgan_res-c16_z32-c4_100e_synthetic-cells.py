# The CPU config with a 4-way code: as many categories as the synthetic crops have classes
# (tumour, lymphocyte, stromal, mitosis). Every k-means baseline of the evaluation tool
# takes K = 4 too.
_base_ = './cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py'
model = dict(num_categories=4)
