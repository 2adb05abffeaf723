"""SonoLabel's detector library: two-frame Faster R-CNN, optical flow, data, training,
evaluation, prediction and the synthetic liver phantom. Speaks COCO files, images and
tensors; never imports Flask or the annotator."""
