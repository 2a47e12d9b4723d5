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
    "002": ("hw4net1", "hw4net2", "hw4net3", "hw4net3_shared"),
    "003": ("deepcnn",),
    "004": ("dropcnn_adam", "dropcnn_sgd", "dropcnn_rmsprop", "dropcnn_sgd_chained",
            "dropcnn_rmsprop_chained"),
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
    # The study's Net3 itself (one conv layer applied ten times): the same reported figures.
    "hw4net3_shared": {"val_accuracy": 0.56, "train_accuracy": 0.58},
    "deepcnn": {"best_test_accuracy": 0.9448, "final_test_accuracy": 0.9439},
    # 004's train_accuracy: its comparison table's "Training Accuracy (Epoch 15)", Keras' figure
    # over the last epoch's training batches.
    "dropcnn_adam": {"test_accuracy": 0.7012, "val_accuracy": 0.7042, "train_accuracy": 0.6939},
    # The study trained SGD and then RMSprop on top of the Adam-trained model, not from scratch:
    # its figures are of the chained experiments; dropcnn_sgd and dropcnn_rmsprop, each trained
    # from scratch, have no study figure.
    "dropcnn_sgd": {},
    "dropcnn_rmsprop": {},
    "dropcnn_sgd_chained": {"val_accuracy": 0.6950, "train_accuracy": 0.6825},
    "dropcnn_rmsprop_chained": {"val_accuracy": 0.6814, "train_accuracy": 0.7068},
}

# Parameter counts the studies' models had. hw4net3's 539,013 comes from the study reusing one
# conv layer instance ten times; cnnlab gives each layer its own weights (622,245), and
# hw4net3_shared is the study's shared version (539,013 in both columns).
REPORTED_PARAMS: dict[str, int] = {
    "hw4net1": 406_885,
    "hw4net2": 529_765,
    "hw4net3": 539_013,
    "hw4net3_shared": 539_013,
    "deepcnn": 4_079_429,
    "dropcnn_adam": 315_722,
    "dropcnn_sgd": 315_722,
    "dropcnn_rmsprop": 315_722,
    "dropcnn_sgd_chained": 315_722,
    "dropcnn_rmsprop_chained": 315_722,
}
