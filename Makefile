# MMHisto: the two commands (see README.md)
#   make demo   set up (if needed), train the stock and the fixed PU cell detector on
#               synthetic H&E with 30% of the cells annotated, calibrate the stock one
#               (calibrated CE), test all three on the same tiles, print them side by side, draw
#   make test   set up (if needed), run the test suite
# Variables: TORCH_SPEC / TORCH_INDEX_URL (CUDA users), DEMO_ITERS (default 500), PYTEST_ARGS.
SHELL := /bin/bash
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(CURDIR)/.venv/bin/python)
DEMO_CONFIG := configs/pu_detection/faster-rcnn_r18-c32_fpn_{}_500i_synthetic-sparse30.py
DEMO_CONFIG_stock := $(subst {},ce,$(DEMO_CONFIG))
DEMO_CONFIG_pu := $(subst {},pu-nnpu-hp-warmup,$(DEMO_CONFIG))
DEMO_DIR := work_dirs/demo
DEMO_ITERS ?= 500
DATA := data/synthetic
# the PU detector ramps pi_U in over the first half of training (250 of 500 iterations)
DEMO_PU_WARMUP := $(foreach h,rpn_head roi_head.bbox_head,\
  model.$(h).loss_cls.hidden_prior_warmup_iters=$$(( $(DEMO_ITERS) / 2 )))

.PHONY: setup demo test data clean-demo

setup:
	@bash tools/setup_env.sh

data: setup
	@if [ ! -f $(DATA)/annotations/test.json ]; then \
	  $(PY) tools/dataset_converters/synthetic.py --out $(DATA) --num-train 48 --num-val 8 \
	    --num-test 8 --size 256 --seed 0; \
	else echo "[mmhisto] $(DATA) exists: using it"; fi

demo: data
	@for m in stock pu; do \
	  cfg=$$([ $$m = stock ] && echo $(DEMO_CONFIG_stock) || echo $(DEMO_CONFIG_pu)); \
	  if [ -f $(DEMO_DIR)/$$m/iter_$(DEMO_ITERS).pth -a -f $(DEMO_DIR)/$$m/$$(basename $$cfg) ]; then \
	    echo "[mmhisto] $(DEMO_DIR)/$$m/iter_$(DEMO_ITERS).pth exists: reusing the trained $$m" \
	      "detector (make clean-demo to retrain)"; \
	  else \
	    echo "[mmhisto] training the $$m detector: $$cfg"; \
	    $(PY) tools/train.py $$cfg --work-dir $(DEMO_DIR)/$$m \
	      --cfg-options train_cfg.max_iters=$(DEMO_ITERS) train_cfg.val_interval=$(DEMO_ITERS) \
	      default_hooks.checkpoint.interval=$(DEMO_ITERS) \
	      $$([ $$m = pu ] && echo $(DEMO_PU_WARMUP)) || exit 1; \
	  fi; \
	  $(PY) tools/test.py $$cfg $(DEMO_DIR)/$$m/iter_$(DEMO_ITERS).pth --work-dir $(DEMO_DIR)/$$m \
	    --out $(DEMO_DIR)/$$m/test_preds.pkl || exit 1; \
	done
	@echo "[mmhisto] calibrated CE: the stock detector thresholded at 0.5 c, c = mean score of" \
	  "the annotated validation cells (Elkan & Noto 2008)"
	$(PY) tools/analysis_tools/calibrate_threshold.py $(DEMO_CONFIG_stock) \
	  $(DEMO_DIR)/stock/iter_$(DEMO_ITERS).pth --work-dir $(DEMO_DIR)/calibration \
	  --out $(DEMO_DIR)/calibration/calibration.json
	$(PY) tools/analysis_tools/draw_detections.py $(DEMO_CONFIG_stock) \
	  $(DEMO_DIR)/stock/iter_$(DEMO_ITERS).pth --name stock --split test --index 5 --radius 8 \
	  --compare calibrated-CE $(DEMO_CONFIG_stock) $(DEMO_DIR)/stock/iter_$(DEMO_ITERS).pth \
	    $(DEMO_DIR)/calibration/calibration.json \
	  --compare PU $(DEMO_CONFIG_pu) $(DEMO_DIR)/pu/iter_$(DEMO_ITERS).pth 0.5 \
	  --cfg-options model.test_cfg.rcnn.score_thr=0.0 --out $(DEMO_DIR)/demo_sparse_labels.png
	$(PY) tools/analysis_tools/plot_training.py $(DEMO_DIR)/pu --out $(DEMO_DIR)/training_curves.png
	@echo "[mmhisto] test set (complete labels), point matching within 8 px: stock (score >= 0.5)," \
	  "calibrated CE (the same predictions, score >= 0.5 c), fixed PU (nnPU + per-batch prior)"
	$(PY) tools/analysis_tools/score_sweep.py stock=$(DEMO_DIR)/stock/test_preds.pkl \
	  calibrated-CE=$(DEMO_DIR)/stock/test_preds.pkl@$(DEMO_DIR)/calibration/calibration.json \
	  PU=$(DEMO_DIR)/pu/test_preds.pkl --radius 8 --out-png $(DEMO_DIR)/score_sweep.png
	@echo "[mmhisto] pictures: $(DEMO_DIR)/demo_sparse_labels.png" \
	  "(the three detectors on one test tile), $(DEMO_DIR)/score_sweep.png (precision-recall)," \
	  "$(DEMO_DIR)/training_curves.png; 3-seed numbers: docs/benchmarks/det_sparse"

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR)
