# The CPU config with a 2-way code: the two main classes (tumour 42%, lymphocyte 49% of the
# synthetic training crops) are close to the halves a uniform 2-way code expects, where a
# uniform 5-way code meets classes of 42 / 49 / 7 / 2%.
_base_ = './cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py'
model = dict(num_categories=2)
