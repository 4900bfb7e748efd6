# The synthetic segmentation set with incomplete labels: 30% of the nuclei of every
# training tile stay annotated (SparsifyAnnotations, nested subsets seeded by file name);
# an unannotated nucleus becomes background, as it would in a sparsely labelled slide.
# Instance maps are loaded so that touching nuclei are dropped one by one. Validation and
# test stay complete. tools/analysis_tools/sparse_sweep.py changes the fraction.
_base_ = './synthetic_seg.py'
sparsify = dict(type='SparsifyAnnotations', mode='nested', fraction=0.3, seed=0)
train_pipeline = [s for t in _base_.train_pipeline
                  for s in ([t, dict(type='LoadInstanceAnnotations'), sparsify]
                            if t['type'] == 'LoadAnnotations' else [t])]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
