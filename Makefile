# MMHisto: the two commands (see README.md)
#   make demo   set up (if needed), train a cell detector on synthetic H&E, evaluate, draw
#   make test   set up (if needed), run the test suite
# Variables: TORCH_SPEC / TORCH_INDEX_URL (CUDA users), DEMO_ITERS (default 500), PYTEST_ARGS.
SHELL := /bin/bash
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(CURDIR)/.venv/bin/python)
DEMO_CONFIG := configs/baselines/faster-rcnn_r18-c32_fpn_demo_synthetic.py
DEMO_DIR := work_dirs/demo
DEMO_ITERS ?= 500
DATA := data/synthetic

.PHONY: setup demo test data clean-demo

setup:
	@bash tools/setup_env.sh

data: setup
	@if [ ! -f $(DATA)/annotations/test.json ]; then \
	  $(PY) tools/dataset_converters/synthetic.py --out $(DATA) --num-train 48 --num-val 8 \
	    --num-test 8 --size 256 --seed 0; \
	else echo "[mmhisto] $(DATA) exists: using it"; fi

demo: data
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR) \
	  --cfg-options train_cfg.max_iters=$(DEMO_ITERS) train_cfg.val_interval=$(DEMO_ITERS) \
	  default_hooks.checkpoint.interval=$(DEMO_ITERS)
	$(PY) tools/test.py $(DEMO_CONFIG) $(DEMO_DIR)/iter_$(DEMO_ITERS).pth --work-dir $(DEMO_DIR)
	$(PY) tools/analysis_tools/draw_detections.py $(DEMO_CONFIG) $(DEMO_DIR)/iter_$(DEMO_ITERS).pth \
	  --split test --index 5 --out $(DEMO_DIR)/demo_predictions.png
	$(PY) tools/analysis_tools/plot_training.py $(DEMO_DIR) --out $(DEMO_DIR)/training_curves.png
	@echo "[mmhisto] pictures: $(DEMO_DIR)/demo_predictions.png (predictions over a test tile)," \
	  "$(DEMO_DIR)/training_curves.png (losses)"

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR)
