"""Detection track (issue 6): YOLO-format data, ultralytics training with KD, export, mAP of every artifact."""
