# Data sets of the benchmark specs: where each must exist and the command that makes it
# (tools/analysis_tools/benchmark.py runs it when the path is missing; $MNFINDER_ROOT is
# the folder of the mnfinder package's data, e.g. ../shared/data/mnfinder).
synthetic_data = dict(
    path='data/synthetic_bench/annotations/test.json',
    make='python tools/dataset_converters/synthetic.py --out data/synthetic_bench '
    '--num-train 48 --num-val 16 --num-test 32 --size 256 --seed 0')
# mnfinder: train and val (4 training-data images, seeded) from its training-data, test =
# its validation-data; test.json exists only in this three-split layout, so an older
# two-split data/mnfinder (val = test) is rebuilt
mnfinder_data = dict(
    path='data/mnfinder/annotations/test.json',
    make='python tools/dataset_converters/mnfinder.py --root $MNFINDER_ROOT --out data/mnfinder '
    '--val-from-train 4 --seed 0')
# the synthetic benchmark set (more test tiles than `make data`'s) for every dataloader
synthetic_root = dict(
    train_dataloader=dict(dataset=dict(data_root='data/synthetic_bench/')),
    val_dataloader=dict(dataset=dict(data_root='data/synthetic_bench/')),
    test_dataloader=dict(dataset=dict(data_root='data/synthetic_bench/')))
