# The CPU config as shipped before issue 17: L_Q only in the Q step, whose Adam (Q and G)
# divides lambda2 out, so lambda2 changes nothing. The reference the fix is measured against.
_base_ = './cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py'
model = dict(q_loss_in_generator_step=False)
