"""Column names of the tables diffusers-tsa reads and writes."""

#: The caption and video columns of every table `load_video_dataset` returns (and of what the features CLI saves).
CAPTION = "caption"
VIDEO = "video"

#: The columns `TeacherFeatures` adds: features `(F, H, W, C)`, motion mask `(F, H, W)`, whether the clip was usable,
#: and on every row the JSON of the settings the row was made with (they travel with the data).
FEATURES_COLUMN = "teacher_features"
MASK_COLUMN = "motion_mask"
VALID_COLUMN = "teacher_valid"
SETTINGS_COLUMN = "teacher_settings"
