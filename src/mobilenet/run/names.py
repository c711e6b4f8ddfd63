"""A run folder's file names and history.csv's score columns, spelled here only. No torch:
the deployed path reads them."""

CHECKPOINT, WEIGHTS, CONFIG, HISTORY = "checkpoint.pt", "model.safetensors", "config.json", "history.csv"
CURVES = ("total_acc.png", "total_test_loss.png")  # the seed's two figures
REPORT, LOG = "report.html", "train.log"
LOG_MARK = "# mobilenet train log: the run's lines as they were shown"  # train.log's first line
METRICS, CONFUSION = "metrics.json", "confusion_matrix.png"  # what evaluate writes
RUN_FILES = (CHECKPOINT, WEIGHTS, CONFIG, HISTORY, *CURVES, REPORT)  # what a run writes (atomically, see files.py)
EXPORTS = "exports.json"  # what `export` checked of each file beside the model, by file name
LATENCY = "latency.json"  # each device's bench timings of the model, by device name
# --select-by's choices: the validation score that chooses the kept epoch, its history.csv column
SELECT_BY = {"top1": ("accuracy", "val_acc"), "balanced-accuracy": ("balanced accuracy", "val_balanced_acc"),
             "macro-f1": ("macro F1", "val_macro_f1"), "map": ("mAP", "val_map")}
SINGLE_LABEL_ONLY, MULTI_LABEL_ONLY = ("balanced-accuracy",), ("map",)  # what each task can score
