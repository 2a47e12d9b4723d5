"""What the original studies (000-004) reported, kept beside our results for comparison.

REPORTED maps experiment -> figure -> value. Values are fractions; an experiment whose study
reported nothing has an empty entry. Figure names say which split they were measured on
(`test_accuracy`, `val_accuracy`, `train_accuracy`); study 003 reports both its best and its final
epoch (`best_test_accuracy`, `final_test_accuracy`).
"""

# The experiments of each study, in the studies' own order. Their names are fixed.
STUDIES: dict[str, tuple[str, ...]] = {
    "000": ("ann", "cnn", "cnn_aug"),
    "001": ("vgg16_tl", "resnet18_tl"),
    "002": ("hw4net1", "hw4net2", "hw4net3"),
    "003": ("deepcnn",),
    "004": ("dropcnn_adam", "dropcnn_sgd", "dropcnn_rmsprop"),
}

STUDY_OF: dict[str, str] = {exp: study for study, exps in STUDIES.items() for exp in exps}

REPORTED: dict[str, dict[str, float | None]] = {
    "ann": {},
    "cnn": {},
    "cnn_aug": {},
    "vgg16_tl": {"test_accuracy": 0.3930},
    "resnet18_tl": {"test_accuracy": 0.7140},
    "hw4net1": {"val_accuracy": 0.51, "train_accuracy": 0.98},
    "hw4net2": {"val_accuracy": 0.54, "train_accuracy": 0.99},
    "hw4net3": {"val_accuracy": 0.56, "train_accuracy": 0.58},
    "deepcnn": {"best_test_accuracy": 0.9448, "final_test_accuracy": 0.9439},
    "dropcnn_adam": {"test_accuracy": 0.7012, "val_accuracy": 0.7042},
    # The study trained SGD and then RMSprop on top of the Adam-trained model (not from scratch).
    "dropcnn_sgd": {"val_accuracy": 0.6950},
    "dropcnn_rmsprop": {"val_accuracy": 0.6814},
}

# Parameter counts the studies' models had. hw4net3's 539,013 comes from the study reusing one
# conv layer instance ten times; cnnlab gives each layer its own weights (622,245).
REPORTED_PARAMS: dict[str, int] = {
    "hw4net1": 406_885,
    "hw4net2": 529_765,
    "hw4net3": 539_013,
    "deepcnn": 4_079_429,
    "dropcnn_adam": 315_722,
    "dropcnn_sgd": 315_722,
    "dropcnn_rmsprop": 315_722,
}
