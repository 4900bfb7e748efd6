# mnfinder segmentation with 30% of the nuclei and micronuclei of every training image
# annotated (see synthetic_seg_sparse30.py); validation and test complete.
_base_ = './mnfinder_seg.py'
sparsify = dict(type='SparsifyAnnotations', mode='nested', fraction=0.3, seed=0)
train_pipeline = [s for t in _base_.train_pipeline
                  for s in ([t, dict(type='LoadInstanceAnnotations'), sparsify]
                            if t['type'] == 'LoadAnnotations' else [t])]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
