# The zoo's stock Faster R-CNN (configs/benchmarks/zoo/) with the HED stain jitter of Tellez
# et al. 2018 (RandomStainJitter, projects/common/stain.py) right after loading the training
# images; everything else unchanged. Measured by configs/benchmarks/stain.py.
_base_ = ['../benchmarks/zoo/faster-rcnn_r18-c32_fpn_500i_synthetic-sparse30.py']
custom_imports = dict(imports=['projects.common'], allow_failed_imports=False)
jitter = dict(type='RandomStainJitter', sigma=0.05, bias=0.05)
train_pipeline = [s for t in _base_.train_pipeline
                  for s in ([t, jitter] if t['type'] == 'StrictLoadImageFromFile' else [t])]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
