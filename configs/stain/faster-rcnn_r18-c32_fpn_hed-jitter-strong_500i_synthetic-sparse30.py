# As faster-rcnn_r18-c32_fpn_hed-jitter_500i_synthetic-sparse30.py with a strong jitter: each
# stain's amount scaled by U(0.7, 1.3) and shifted by U(-0.1, 0.1) OD (the stain-shifted
# synthetic set has 1.3x the hematoxylin and 0.75x the eosin, on other stain vectors).
_base_ = ['./faster-rcnn_r18-c32_fpn_hed-jitter_500i_synthetic-sparse30.py']
train_pipeline = [dict(t, sigma=0.3, bias=0.1) if t['type'] == 'RandomStainJitter' else t
                  for t in _base_.train_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
