"""`mobilenet evaluate`, `report`, `predict` and `samples`: a trained model at work."""

from __future__ import annotations

import json
import os
import sys

from ..errors import printable
from ..formats import runtime_for
from .options import data_folder, force_option, json_option, number, runtime_option, workers_option


def _cmd_evaluate(args) -> int:
    args.runtime = runtime_for(args.model, args.runtime)
    if args.runtime != "torch":
        from ..deploy.runtime import evaluate_file

        m = evaluate_file(args.model, args.runtime, data=args.data, out=args.out, force=args.force)
    else:
        from ..report.evaluation import evaluate

        m = evaluate(args.model, data=args.data, out=args.out, workers=args.workers, force=args.force)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    if m.get("task") == "multi-label":
        return _print_labels_evaluation(m, args)
    print(f"{printable(m['data'])}: {m['images']} test images  top-1 {100 * m['top1']:.2f}%  top-5 {100 * m['top5']:.2f}%  "
          f"loss {m['loss']:.4f}")
    print(f"balanced accuracy {100 * m['balanced_accuracy']:.2f}%  macro F1 {100 * m['macro_f1']:.2f}%  "
          "(each class weighs alike; recall by class:)")
    names = {printable(c): acc for c, acc in m["per_class"].items()}  # class names come from the model's files
    width = max(len(c) for c in names)
    for name, acc in names.items():
        print(f"  {name:<{width}}  {100 * acc:6.2f}%")
    _print_written(m, args, "metrics.json, confusion_matrix.png")
    return 0


def _print_labels_evaluation(m: dict, args) -> int:
    """A multi-label model's figures: mAP, and each class's AP and scores at its threshold."""
    print(f"{printable(m['data'])}: {m['images']} test images  mAP {100 * m['mAP']:.2f}%  loss {m['loss']:.4f}")
    print(f"at the thresholds: label accuracy {100 * m['label_accuracy']:.2f}%  micro F1 {100 * m['micro_f1']:.2f}%  "
          f"macro F1 {100 * m['macro_f1']:.2f}%  (by class: AP, threshold, precision, recall:)")
    names = {printable(c): c for c in m["per_class_ap"]}  # class names come from the model's files
    width = max(len(c) for c in names)
    for shown, c in names.items():
        ap, s = m["per_class_ap"][c], m["per_class_scores"][c]
        print(f"  {shown:<{width}}  " + ("    -  " if ap is None else f"{100 * ap:6.2f}%")
              + f"  {s['threshold']:.3f}  {100 * s['precision']:6.2f}%  {100 * s['recall']:6.2f}%")
    _print_written(m, args, "metrics.json")
    return 0


def _print_written(m: dict, args, files: str) -> None:
    if m["bad_files"] or m["skipped"]:
        print(f"left out: {len(m['bad_files'])} files that did not decode, {m['skipped']} entries skipped "
              "(links that leave the folder, or no regular file)")
    where = args.out or (args.model if args.runtime == "torch" else os.path.dirname(args.model) or ".")
    page = " and report.html" if args.runtime == "torch" else ""
    print(f"wrote {files}{page} to {printable(where)}")


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="top-1, top-5, per-class accuracy and a confusion matrix (a multi-label "
                       "model: mAP, and each class's AP and scores at its threshold)")
    p.add_argument("--model", required=True, help="a run folder (config.json + model.safetensors)")
    p.add_argument("--data", type=data_folder, help="'fashion-mnist', a folder or a label file (default: the data set "
                   "the model was trained on)")
    p.add_argument("--out", help="where metrics.json and confusion_matrix.png go (default: --model)")
    workers_option(p)
    runtime_option(p)
    json_option(p)
    force_option(p, "a metrics.json, confusion_matrix.png or report.html that mobilenet did not write")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_report(args) -> int:
    from ..sweep.page import is_sweep, sweep_report

    if is_sweep(args.model):  # a sweep's page needs no torch
        sweep_report(args.model, out=args.out, force=args.force)
    else:
        from ..report.page import report

        report(args.model, out=args.out, data=args.data, workers=args.workers, force=args.force)
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="one HTML page: the model card, curves, confusion matrix, per-class scores, "
                       "the most confident mistakes with activation maps, exports")
    p.add_argument("--model", required=True, help="a run folder (config.json + model.safetensors)")
    p.add_argument("--out", help="the page to write (default: report.html in --model)")
    p.add_argument("--data", type=data_folder, help="'fashion-mnist' or a folder (default: the data set the model "
                   "was trained on)")
    workers_option(p)
    force_option(p, "a page that mobilenet did not write")
    p.set_defaults(func=_cmd_report)


def _cmd_predict(args) -> int:
    from ..deploy.predictor import Predictor

    results, failed = Predictor(args.model, runtime=args.runtime).predict(args.images, top_k=args.top_k)
    for f in failed:
        print(printable(f"mobilenet predict: error: {f['image']}: {f['reason']}"), file=sys.stderr)
    if args.json:
        print(json.dumps({"predictions": results, "failed": failed}, indent=2))
    else:
        for r in results:
            print(printable(r["image"]))
            if "labels" in r:  # a multi-label model: the classes at or above their thresholds
                print("  labels: " + (printable(", ".join(r["labels"])) or "none at their thresholds"))
            for p in r["predictions"]:
                print(f"  {100 * p['probability']:6.2f}%  {printable(p['class'])}")
    return 1 if failed else 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="class names with probabilities for images (softmax; for a multi-label "
                       "model each class's sigmoid, and the labels at their thresholds)")
    p.add_argument("--model", required=True, help="a run folder (config.json + model.safetensors)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=number("top-k"), default=5,
                   help="classes shown per image (default 5)")
    json_option(p, "{predictions, failed}: each image's classes (and a multi-label model's labels), and each image "
                "that failed with its reason")
    runtime_option(p)
    p.set_defaults(func=_cmd_predict)


def _cmd_samples(args) -> int:
    from ..data.fashion import write_samples
    from ..run.ownership import refuse_foreign

    for path in write_samples(args.out, args.count, lambda paths: refuse_foreign(paths, "--out", args.force)):
        print(printable(path))
    return 0


def add_samples(sub) -> None:
    p = sub.add_parser("samples", help="write Fashion-MNIST test images as PNG files, to try predict on")
    p.add_argument("--out", default="samples", help="folder (default ./samples)")
    p.add_argument("--count", type=number("count"), default=5, help="images to write (default 5)")
    force_option(p, "PNG files of those names that mobilenet did not write")
    p.set_defaults(func=_cmd_samples)
