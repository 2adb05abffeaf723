"""The default training recipe, in one place: ``python -m detector train`` and ``cv``
(:mod:`detector.train`) and the app's retrain job read it. It imports nothing, so the app can
read it without loading torch.

Chosen on BUSI's patient-grouped, near-duplicate-aware folds (``python -m detector cv``; the
README's Results give the cross-validated numbers and the ablation). The schedule came first:
12 epochs raised AP50 by 0.13 over 200 steps, 20 epochs added nothing on AP50 (+0.001 on the
mean). With 12 epochs of 500 images taking 11 minutes at 256 px on two cores, the rest of the
25-minute budget went to the input: 384 px, the same 12 epochs, raised AP50 on every fold
(+0.010 on the mean, to 0.861), AP by 0.036 and AP75 by 0.062 (tighter boxes, what a
pre-label's adjust costs), and trains 500 images in 23.6 minutes (``bench/
train_speed.py``); 512 px would not fit 12 epochs in the budget. Fitted anchors, weight EMA
and the ultrasound augmentations stay options: none gained AP50 on the folds (measured at
256 px). Test-time flip (``--tta flip`` of evaluate, predict and cv) is a prediction option,
off by default: on the three folds at 384 px it added 0.021-0.024 AP but 0.003-0.011 AP50 for
two passes a frame, and the workspace's pre-labels want speed.
"""
SIZE = 384  # input pixels (a multiple of 32)
EPOCHS = 12  # passes over the training set; with validation, early stopping after PATIENCE
PATIENCE = 5
LR = 3e-4  # AdamW; linear warm-up over WARMUP_ITERS steps, then cosine decay
WARMUP_ITERS = 100
BATCH = 4  # images per step (and process)
# The finest feature map's stride; 4 adds a level for objects of a few pixels (small vessels at
# 256 px), at more time a frame. Not cross-validated on BUSI's lesions, so 8 stays the default.
MIN_STRIDE = 8
MIN_STRIDES = (8, 4)
