"""The default training recipe, in one place: ``python -m detector train`` and ``cv``
(:mod:`detector.train`) and the app's retrain job read it. It imports nothing, so the app can
read it without loading torch.

Chosen on BUSI's patient-grouped, near-duplicate-aware folds (``python -m detector cv``; the
README's Results give the cross-validated numbers and the ablation): on two CPU cores a
256 px input trains about four times faster than 512 px, so the same time buys four times
the passes over the images, and the longer schedule was worth more AP50 on the folds than
the larger input. 12 epochs of 500 images take 11 minutes on two cores (``bench/
train_speed.py``). 20 epochs, cross-validated on the same folds, did not raise AP50 (+0.001
on the mean; AP +0.015 to +0.025 on every fold) for 1.7 times the training; whether a larger
input buys more AP50 in the rest of the 25 minutes has not been cross-validated. Fitted
anchors, weight EMA and the ultrasound augmentations stay options: none gained on the folds.
Test-time flip (``--tta flip`` of evaluate, predict and cv) is a prediction option, off by
default: on two folds it added 0.014-0.018 AP but 0.003-0.008 AP50 for 1.8 times the
prediction time, and the workspace's pre-labels want speed.
"""
SIZE = 256  # input pixels (a multiple of 32)
EPOCHS = 12  # passes over the training set; with validation, early stopping after PATIENCE
PATIENCE = 5
LR = 3e-4  # AdamW; linear warm-up over WARMUP_ITERS steps, then cosine decay
WARMUP_ITERS = 100
BATCH = 4  # images per step (and process)
