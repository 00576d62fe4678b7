# Video search with the SynthPedes quick-start model: index videos as person
# tracks (tools/index_video.py) and search them (tools/search_video.py).
# The model and its test pipeline come from configs/tbps_synth.py; this file
# adds the video dataset and the ingestion components (registered in
# tbps_mm.registry.TASK_UTILS and DATASETS).
_base_ = ['../tbps_synth.py']

video_data_root = 'data/synthpedes_videos_small'

# The SynthPedes video set (generated on first use): held-out street scenes
# whose people are not in the image dataset (seed 100).
video_dataset = dict(
    type='SynthPedesVideos', data_root=video_data_root, size='small', seed=100
)

video_ingest = dict(
    # weight-free detector for static cameras; for real footage export your
    # detector's boxes as MOTChallenge rows and use
    # dict(type='MOTDetectionsFile', det_dir='dets/') (--detections DIR), or
    # dict(type='TorchvisionDetector', arch='fasterrcnn_mobilenet_v3_large_fpn',
    #      checkpoint='my_person_detector.pth')
    detector=dict(type='BackgroundSubtractionDetector'),
    # tracker settings chosen on a validation video set (seed 200); the
    # background detector's scores (foreground fill) sit around 0.3-0.9
    tracker=dict(
        type='ByteTrackAdapter',
        track_activation_threshold=0.3,
        high_conf_det_threshold=0.5,
        minimum_iou_threshold=0.05,
        lost_track_buffer=60,
        minimum_consecutive_frames=2,
    ),
    sample_fps=5.0,  # frames per second run through detector and tracker
    crops_per_track=8,  # best crops (score x height) pooled per track
    min_detections=3,  # shorter tracks are dropped
)
