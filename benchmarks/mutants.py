"""Planted bugs, one at a time, each against the tests that claim to catch it (issue 17).

Each mutant is one literal replacement in one file, asserted to match exactly once, so the
list cannot rot silently: when the code it plants into changes, this script stops and says
which mutant no longer applies. For each mutant the script copies src/, tests/,
pyproject.toml, README.md and docs/ into a temporary folder, plants the bug there, and runs only
the tests named for it, in that folder, with the copy's src/ first on PYTHONPATH (ahead of
the venv's editable install, for `python -m mobilenet`, the `mobilenet` script and torchrun's
workers alike; checked before anything runs). A mutant is killed when its tests fail
(pytest's status 1); it survives when they pass; any other status is an error. First, all
named tests must pass on the unplanted copy, or a kill would mean nothing.

The list holds the six bugs of issue 17, the weak spots it names, and at least one bug
against each promise of docs/guarantees.md. "Any CPU, any speed" is a promise
about the tests themselves, so its bug is planted in tests/ (a fixed wait).

Written here rather than with mutmut or cosmic-ray: those mutate every expression they find
and run the suite for each (hours on 2 cores), while the question here is narrower, whether
each promise's own test fails when that promise breaks; about 20 chosen bugs with their named
tests run in about 10 minutes on 2 cores.

    .venv/bin/python benchmarks/mutants.py [NAME ...]     # or: make mutants
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["src", "tests", "pyproject.toml", "README.md", "docs"]


@dataclass
class Mutant:
    name: str  # what breaks, in a few words
    promise: str  # the item or the guarantee (docs/guarantees.md) it breaks
    path: str  # relative to the repository
    old: str
    new: str
    tests: list[str]  # pytest node ids, relative to the repository


I = "tests/test_interrupts.py::"
T = "tests/test_trust.py::"
S = "tests/test_sweep.py::"
OV = "tests/test_openvino.py::"
LT = "tests/test_litert.py::"
RP = "tests/test_report.py::"
RM = "tests/test_remote.py::"
MP = "tests/test_mediapipe.py::"
BL = "tests/test_balance.py::"
LB = "tests/test_labels.py::"
ML = "tests/test_multilabel.py::"
MUTANTS = [
    # --- issue 17's six ----------------------------------------------------------------
    Mutant("resume starts over", "issue 17.1; docs/guarantees.md Resume", "src/mobilenet/training/loop.py",
           "        restore(run, checkpoint)\n",
           "        restore(run, checkpoint)\n        run = build_run(cfg, out, dist, log, fresh=True)\n",
           [I + "test_a_resumed_run_starts_at_its_checkpoint_and_trains_only_what_is_left"]),
    Mutant("DDP never averages gradients", "issue 17.2", "src/mobilenet/training/build.py",
           'net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" '
           'else None)',
           "net = model",
           ["tests/test_distributed.py::test_two_processes_match_one"]),
    Mutant("DDP counts every test image twice", "issue 17.2", "src/mobilenet/data/batches.py",
           "return torch.arange(rank, n, world)", "return torch.arange(0, n)",
           ["tests/test_distributed.py::test_two_processes_match_one"]),
    Mutant("int8 file is the float32 one", "issue 17.3", "src/mobilenet/deploy/exporter.py",
           "proto = onnx.load(str(dst))", "proto = onnx.load(str(src))",
           ["tests/test_export.py::test_int8_keeps_accuracy_and_shrinks"]),
    Mutant("confusion matrix transposed", "issue 17.4", "src/mobilenet/report/metrics.py",
           "np.add.at(self.confusion, (labels, top1), 1)", "np.add.at(self.confusion, (top1, labels), 1)",
           ["tests/test_training.py::test_metrics_against_figures_worked_by_hand",
            "tests/test_training.py::test_evaluate_and_predict"]),
    Mutant("top-5 over all classes", "issue 17.4", "src/mobilenet/report/metrics.py",
           "[:, :min(5, n)]", "[:, :n]",
           ["tests/test_training.py::test_metrics_against_figures_worked_by_hand",
            "tests/test_training.py::test_evaluate_and_predict"]),
    Mutant("--init loads nothing", "issue 17.5", "src/mobilenet/training/build.py",
           "model.load_state_dict(fit_state_dict(init_state, model), strict=False)",
           "fit_state_dict(init_state, model)",
           ["tests/test_weights.py::test_train_with_init_from_a_timm_checkpoint"]),
    Mutant("checkpoint only at the run's end", "issue 17.6; docs/guarantees.md Resume", "src/mobilenet/training/loop.py",
           "    _checkpoint(run, epoch + 1, 0, None)\n",
           "    if epoch + 1 == run.cfg.epochs:\n        _checkpoint(run, epoch + 1, 0, None)\n",
           [I + "test_kill_9_at_random_moments"]),
    # --- the weak spots issue 17 names ---------------------------------------------------
    Mutant("export self-check off", "issue 17, also weak", "src/mobilenet/deploy/exporter.py",
           "if diff > tolerance or same_top1 is False:", "if False:",
           ["tests/test_export.py::test_an_export_that_disagrees_with_pytorch_writes_nothing"]),
    Mutant("Table 3's separable params count a bias", "issue 17, also weak", "src/mobilenet/net/cost.py",
           '"separable": {"mult_adds": sep, "params": sep_w},', '"separable": {"mult_adds": sep, "params": sep_w + c_out},',
           ["tests/test_cost.py::test_table_3_single_layer"]),
    # --- one or more per guarantee -----------------------------------------------------
    Mutant("SIGTERM saves the step before its own", "docs/guarantees.md Resume", "src/mobilenet/training/loop.py",
           "_checkpoint(run, epoch, step + 1, ", "_checkpoint(run, epoch, step, ",
           [I + "test_sigterm_in_a_step_and_in_evaluation_and_a_second_ctrl_c"]),
    Mutant("files written in place", "docs/guarantees.md Atomic files", "src/mobilenet/files.py",
           'fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)',
           "fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), str(path)",
           [I + "test_kill_9_inside_steps_evaluation_and_every_file_write",
            "tests/test_faults.py::test_a_full_disk_keeps_the_previous_checkpoint"]),
    Mutant("no lock on the run folder", "docs/guarantees.md One trainer per folder", "src/mobilenet/run/folder.py",
           "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "fcntl.lockf(fd, fcntl.LOCK_UN)",
           ["tests/test_faults.py::test_a_second_trainer_on_the_same_folder_is_refused_and_a_killed_one_does_not_block"]),
    Mutant("model initialised from the clock", "docs/guarantees.md Determinism", "src/mobilenet/training/build.py",
           "    torch.manual_seed(cfg.seed)\n    model = MobileNetV1", "    torch.seed()\n    model = MobileNetV1",
           ["tests/test_faults.py::test_same_seed_same_run_other_seed_other_run[fashion-mnist]"]),
    Mutant("folder augmentation seeded by the worker", "docs/guarantees.md Determinism", "src/mobilenet/data/folder.py",
           "torch.manual_seed(mix(self.seed, ", "torch.manual_seed(os.getpid() + mix(self.seed, ",
           ["tests/test_faults.py::test_same_seed_same_run_other_seed_other_run[folder]"]),
    Mutant("checkpoint unpickled", "docs/guarantees.md Safe loading", "src/mobilenet/run/folder.py",
           'state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # never unpickle',
           'state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)  # never unpickle',
           ["tests/test_faults.py::test_hostile_model_folders"]),
    Mutant("a 50,000:1 strip is resized", "docs/guarantees.md Bad files and arguments", "src/mobilenet/data/images.py",
           "if max(w, h) > MAX_ASPECT * min(w, h):", "if False:",
           ["tests/test_faults.py::test_an_extreme_aspect_ratio_is_refused_before_it_is_resized"]),
    Mutant("a bad argument exits 1", "docs/guarantees.md Bad files and arguments", "src/mobilenet/errors.py",
           "    exit_code = 2\n", "    exit_code = 1\n",
           ["tests/test_training.py::test_cli_errors_are_one_line"]),
    Mutant("int8 weights use the full ±127", "docs/guarantees.md int8 on every CPU", "src/mobilenet/deploy/exporter.py",
           'INT8_PRESETS = {"portable": True, "vnni": False}', 'INT8_PRESETS = {"portable": False, "vnni": False}',
           ["tests/test_export.py::test_int8_default_is_exact_on_cpus_without_vnni"]),
    Mutant("a test waits a fixed time", "docs/guarantees.md Any CPU, any speed", "tests/test_interrupts.py",
           '    wait_for(lambda: (out / "checkpoint.pt").exists(), proc)\n',
           '    __import__("time").sleep(5)  # the checkpoint should be there by then\n',
           ["tests/test_structure.py::test_no_test_waits_a_fixed_time"]),
    Mutant("train.log followed through a link", "docs/guarantees.md Hostile folders", "src/mobilenet/files.py",
           "os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC",
           "os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC",
           ["tests/test_hostile.py::test_appends_and_the_lock_never_follow_a_link"]),
    # --- issue 13's GPU path (on the CPU) and issue 15's auto ------------------------------
    Mutant("a step reads its loss on the host", "docs/guarantees.md On one GPU", "src/mobilenet/training/step.py",
           "    learner.optimizer.zero_grad(set_to_none=True)\n",
           "    float(loss)\n    learner.optimizer.zero_grad(set_to_none=True)\n",
           ["tests/test_device_data.py::test_a_training_step_never_reads_a_tensor_on_the_host"]),
    Mutant("persistent workers never learn the epoch", "docs/guarantees.md On one GPU", "src/mobilenet/data/folder.py",
           "return ((epoch, i) for i in self.order.tolist())", "return ((0, i) for i in self.order.tolist())",
           ["tests/test_device_data.py::test_folder_workers_persist_and_still_augment_each_epoch_anew"]),
    Mutant("DDP ranks evaluate with their own BN statistics", "docs/guarantees.md Scaling out", "src/mobilenet/training/scoring.py",
           "    dist.share_buffers(*modules)", "    pass",
           ["tests/test_distributed.py::test_two_processes_match_one"]),
    Mutant("auto takes the strongest preset whatever it keeps", "docs/guarantees.md Augmentation auto",
           "src/mobilenet/data/augment.py", 'kept = [p for p in candidates if p == "none" or kept_share(clean, scores[p], '
           'classes) >= KEEP]', "kept = list(candidates)",
           ["tests/test_augment.py::test_auto_never_flips_arrows"]),
    # --- a stranger's files ---------------------------------------------------------------
    Mutant("the reader takes a device for a file", "docs/guarantees.md A stranger's files", "src/mobilenet/files.py",
           "    if not stat.S_ISREG(os.fstat(fd).st_mode):\n", "    if False:\n",
           [T + "test_a_config_linked_to_dev_zero_is_not_read"]),
    Mutant("the reader reads past its limit", "docs/guarantees.md A stranger's files", "src/mobilenet/files.py",
           "data = f.read(limit + 1)", "data = f.read()",
           [T + "test_a_config_beyond_the_json_limit_is_refused_unread"]),
    Mutant("the ONNX check lets a Loop through", "docs/guarantees.md A stranger's files", "src/mobilenet/deploy/onnx_check.py",
           '"Flatten", "GlobalAveragePool"})', '"Flatten", "GlobalAveragePool", "Loop", "ConstantOfShape"})',
           [T + "test_a_loop_is_refused_before_a_session", T + "test_constant_of_shape_is_refused_through_the_cli"]),
    Mutant("the ONNX check counts no tensor bytes", "docs/guarantees.md A stranger's files", "src/mobilenet/deploy/onnx_check.py",
           "    if total > limit:\n", "    if False:\n",
           [T + "test_external_data_beyond_the_network_is_refused_unread"]),
    Mutant("a .pte is loaded unprobed", "docs/guarantees.md A stranger's files", "src/mobilenet/deploy/executorch.py",
           "    probe(data, path, info)\n", "    pass\n",
           [T + "test_a_program_that_crashes_the_runtime_is_one_line"]),
    Mutant("the sidecar's SHA-256 is not compared", "docs/guarantees.md A stranger's files", "src/mobilenet/deploy/executorch.py",
           'if found.get("sha256") not in (None, hashlib.sha256(data).hexdigest()):', "if False:",
           [T + "test_a_program_its_sidecar_does_not_describe_is_refused"]),
    Mutant("export replaces a file of the user's", "docs/guarantees.md A stranger's files", "src/mobilenet/run/ownership.py",
           "        if not force and not ours(path, marked):\n", "        if False:\n",
           [T + "test_export_refuses_to_replace_files_it_did_not_write"]),
    Mutant("OpenVINO is given a file unchecked", "docs/guarantees.md A stranger's files", "src/mobilenet/deploy/runtime.py",
           "external = check_onnx(data, path)", 'external = self.engine == "OpenVINO" or check_onnx(data, path)',
           [OV + "test_openvino_sees_only_files_the_onnx_check_passed"]),
    # --- OpenVINO (issue 26) ------------------------------------------------------------
    Mutant("OpenVINO's results go to the wrong images", "issue 26.3", "src/mobilenet/deploy/runtime.py",
           "return self.compiled(batch)[0]", "return self.compiled(batch[::-1])[0]",
           [OV + "test_openvino_predicts_and_evaluates_as_onnx_runtime_does",
            OV + "test_openvino_logits_match_onnx_runtime"]),
    Mutant("OpenVINO's import sends its usage event", "issue 26.3", "src/mobilenet/deploy/runtime.py",
           "        sys.modules[OVC] = None  # its import raises ImportError\n", "        sys.modules.pop(OVC, None)\n",
           [OV + "test_openvino_path_imports_neither_torch_nor_telemetry"]),
    Mutant("ONNX exported from channels_last weights", "docs/guarantees.md A stranger's files",
           "src/mobilenet/deploy/exporter.py", "model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)",
           "model = copy.deepcopy(model)",
           ["tests/test_export.py::test_an_onnx_export_at_any_resolution_passes_the_onnx_check"]),
    # --- LiteRT (issue 26) ---------------------------------------------------------------
    Mutant("LiteRT's int8 output is not dequantized", "issue 26.2", "src/mobilenet/deploy/litert.py",
           'return dequantize(self.interpreter.get_tensor(self._out["index"]), self._out)',
           'return self.interpreter.get_tensor(self._out["index"]).astype(np.float32)',
           [LT + "test_int8_is_quantized_keeps_accuracy_and_is_dequantized"]),
    Mutant("the int8 .tflite is the float32 one", "issue 26.1", "src/mobilenet/deploy/exporter.py",
           "lambda calibration: litert_bytes(model, info, calibration)", "lambda calibration: litert_bytes(model, info)",
           [LT + "test_int8_is_quantized_keeps_accuracy_and_is_dequantized"]),
    Mutant("the .pte and .tflite self-check is dropped", "issue 26.1",
           "src/mobilenet/deploy/exporter.py", "    report = _check(name, fp32_run, checks)\n",
           '    report = {"real": {"max_abs_diff": 0.0, "same_top1": True}}\n',
           [LT + "test_an_export_that_disagrees_with_pytorch_writes_nothing"]),
    Mutant("LiteRT's int8 file keeps a dynamic batch (the example's baked into its RESHAPEs)", "issue 39.1",
           "src/mobilenet/deploy/litert.py", 'example, options = (torch.zeros(1, *shape),), {"quant_config": quant_config}',
           'options["quant_config"] = quant_config',
           [LT + "test_trained_files_run_at_batch_1_and_3_with_and_without_xnnpack"]),
    Mutant("the depthwise filter gradient ignores the stride", "docs/training.md Speed",
           "src/mobilenet/net/depthwise.py", "None, 1, padding, stride, c)", "None, 1, padding, 1, c)",
           ["tests/test_model.py::test_depthwise_filter_gradient_on_small_maps_is_the_convolutions"]),
    Mutant("a .tflite is loaded unprobed", "docs/guarantees.md A stranger's files", "src/mobilenet/deploy/litert.py",
           '    probe_file(data, path, "mobilenet.deploy.litert:_probe_child"',
           '    0 and probe_file(data, path, "mobilenet.deploy.litert:_probe_child"',
           [LT + "test_metadata_that_does_not_fit_the_model_is_refused"]),
    Mutant("the probe runs a file on zeros", "docs/guarantees.md A stranger's files", "src/mobilenet/deploy/native.py",
           "np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)",
           "np.zeros((1, *shape), np.float32)",
           [LT + "test_the_probe_runs_a_file_on_an_image_that_is_not_zeros"]),
    Mutant("a file's declared batch is not bounded", "docs/guarantees.md A stranger's files",
           "src/mobilenet/deploy/native.py", "    if batch is not None and not 1 <= batch <= batches:\n",
           "    if False:\n", [LT + "test_a_file_for_more_than_one_image_at_a_time_is_refused"]),
    Mutant("the probe waits as long for every file", "docs/guarantees.md A stranger's files",
           "src/mobilenet/deploy/native.py",
           '                  probe_seconds(info.model and cost_report(info.model)["mult_adds"]))',
           "                  )",
           [T + "test_a_probe_that_runs_on_is_stopped_in_a_time_its_network_bounds"]),
    # --- mobilenet report --------------------------------------------------------------
    Mutant("the report does not escape", "report: a hostile folder cannot script the page", "src/mobilenet/report/html.py",
           "    return html.escape(str(value), quote=True)\n", "    return str(value)\n",
           [RP + "test_a_class_named_like_markup_is_escaped", RP + "test_a_hostile_class_name_cannot_script_the_page"]),
    Mutant("the report shows the least confident mistakes", "report: the most confidently wrong images",
           "src/mobilenet/report/scan.py", 'key=lambda e: -e["p"])[:count]', 'key=lambda e: e["p"])[:count]',
           [RP + "test_the_gallery_shows_the_most_confident_mistakes_first",
            RP + "test_the_gallery_keeps_the_most_confident_mistakes_across_batches"]),
    # --- mobilenet sweep ---------------------------------------------------------------
    Mutant("the sweep picks on the test split", "sweep: the test split never chooses", "src/mobilenet/sweep/run.py",
           'key=lambda r: (-r["val_acc"], r["mult_adds"])', 'key=lambda r: (-r["test_acc"], r["mult_adds"])',
           [S + "test_the_pick_looks_at_validation_accuracy_only"]),
    Mutant("the sweep retrains finished points", "sweep: resumable as a whole", "src/mobilenet/sweep/run.py",
           "todo = [p for p in mine if read_point(out, p) is None]", "todo = list(mine)",
           [S + "test_kill_9_mid_sweep_then_the_same_command_trains_only_what_is_left"]),
    Mutant("the sweep restarts an unfinished point", "sweep: resumable as a whole", "src/mobilenet/sweep/run.py",
           "resume = (folder / CHECKPOINT).is_file()", "resume = False",
           [S + "test_kill_9_mid_sweep_then_the_same_command_trains_only_what_is_left"]),
    Mutant("a shard takes the wrong points", "sweep: shards and collect equal one run", "src/mobilenet/sweep/run.py",
           "mine = points(plan)[cfg.shard[0]::cfg.shard[1]]", "mine = points(plan)[cfg.shard[0]::cfg.shard[1]][:1]",
           [S + "test_shards_then_collect_equal_one_run"]),
    # --- ownership by content -----------------------------------------------------------
    Mutant("a checkpoint.pt's name makes its folder ours", "docs/guarantees.md The user's files",
           "src/mobilenet/run/ownership.py",
           "checkpoint.is_file() and not checkpoint.is_symlink() and _our_checkpoint(checkpoint)\n",
           "checkpoint.is_file() and not checkpoint.is_symlink()\n",
           [T + "test_a_neighbours_name_never_makes_a_file_ours"]),
    Mutant("a .lock's name makes its folder ours", "docs/guarantees.md The user's files",
           "src/mobilenet/run/ownership.py", "    return path != checkpoint and checkpoint.is_file()",
           "    return (path.parent / '.lock').exists() or path != checkpoint and checkpoint.is_file()",
           [T + "test_a_neighbours_name_never_makes_a_file_ours"]),
    Mutant("a page counts as ours without its mark", "docs/guarantees.md The user's files",
           "src/mobilenet/run/ownership.py", "return PAGE_MARK in head if", "return True if",
           [T + "test_each_writer_replaces_its_own_files_and_refuses_the_users"]),
    Mutant("a sweep's point folder may be a link out", "docs/guarantees.md The sweep",
           "src/mobilenet/sweep/records.py", "    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):",
           "    if False:", [S + "test_a_sweep_never_writes_outside_its_folder"]),
    Mutant("the sweep page embeds a linked file", "docs/guarantees.md The sweep", "src/mobilenet/report/html.py",
           "    if path.is_symlink():\n        return None\n", "",
           [S + "test_the_sweep_page_embeds_only_its_own_pictures"]),
    Mutant("a probe child outlives its parent", "docs/guarantees.md A stranger's files",
           "src/mobilenet/deploy/native.py", '    code = f"{_die_with(os.getpid())}from', '    code = f"from',
           [T + "test_a_probe_child_ends_with_its_parent"]),
    # --- nothing phones home -------------------------------------------------------------
    Mutant("ONNX Runtime's telemetry left on", "docs/guarantees.md No telemetry", "src/mobilenet/__init__.py",
           'os.environ["ORT_DISABLE_TELEMETRY"] = "1"\n', "",
           ["tests/test_telemetry.py::test_no_runtime_writes_under_home_or_opens_a_network_socket"]),
    # --- latency on the device -----------------------------------------------------------
    Mutant("host-key checking turned off", "docs/guarantees.md On your device", "src/mobilenet/deploy/remote.py",
           '"-o", "BatchMode=yes",', '"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",',
           [RM + "test_each_failure_is_one_line_and_leaves_nothing_on_the_device[unknown-host-key]",
            RM + "test_a_host_key_is_never_accepted_for_the_user"]),
    Mutant("the device's folder left behind", "docs/guarantees.md On your device", "src/mobilenet/deploy/remote.py",
           "finally:\n    shutil.rmtree(d, ignore_errors=True)\n", "finally:\n    pass\n",
           [RM + "test_each_failure_is_one_line_and_leaves_nothing_on_the_device[runner-crashes]",
            RM + "test_each_runtimes_file_is_timed_on_the_device[onnxruntime-onnx]"]),
    Mutant("the pick made on the host's latency when a device was given", "docs/guarantees.md On your device",
           "src/mobilenet/sweep/run.py", "rows = [with_latency_of(r, on) for r in rows]",
           "rows = [with_latency_of(r, None) for r in rows]",
           [S + "test_the_sweep_on_a_device_times_there_and_picks_on_its_latency"]),
    # --- in an app ---------------------------------------------------------------------
    Mutant("MediaPipe's labels written out of order", "docs/guarantees.md In an app",
           "src/mobilenet/deploy/mediapipe.py", '"\\n".join(info.classes)', '"\\n".join(reversed(info.classes))',
           [MP + "test_the_task_answers_as_pytorch_does_with_the_models_labels[colour]"]),
    Mutant("normalization left out of the MediaPipe file", "docs/guarantees.md In an app",
           "src/mobilenet/deploy/mediapipe.py", "x = (x / 255.0 - self.mean) / self.std", "x = x / 255.0",
           [MP + "test_the_task_answers_as_pytorch_does_with_the_models_labels[grey]"]),
    Mutant("RGB to grey other than images.prepare's", "docs/guarantees.md In an app",
           "src/mobilenet/deploy/mediapipe.py", "GREY = (19595.0, 38470.0, 7471.0)",
           "GREY = (21845.0, 21845.0, 21846.0)",
           [MP + "test_the_task_answers_as_pytorch_does_with_the_models_labels[grey]"]),
    # --- imbalanced classes --------------------------------------------------------------
    Mutant("class weights inverted", "docs/training.md Imbalanced classes", "src/mobilenet/training/balance.py",
           "raw = [1.0 / n if n else 0.0 for n in counts]", "raw = [float(n) for n in counts]",
           [BL + "test_each_scheme_gives_the_weights_written_by_hand",
            BL + "test_the_weighted_loss_is_the_one_computed_by_hand"]),
    Mutant("the class weights left out of the loss", "docs/training.md Imbalanced classes",
           "src/mobilenet/training/step.py", "weight=learner.class_weights, ", "",
           [BL + "test_the_weighted_loss_is_the_one_computed_by_hand"]),
    Mutant("auto never weights", "docs/training.md Imbalanced classes", "src/mobilenet/training/balance.py",
           "return AUTO_SCHEME if imbalance(counts) > IMBALANCE and sampler != \"balanced\" else \"none\"",
           "return \"none\"",
           [BL + "test_auto_weights_an_imbalanced_run_says_so_first_and_a_resume_keeps_it"]),
    Mutant("auto never samples balanced", "docs/training.md Imbalanced classes", "src/mobilenet/training/balance.py",
           'return "balanced" if imbalance(counts) > IMBALANCE else "shuffle"', 'return "shuffle"',
           [BL + "test_auto_samples_an_imbalanced_run_balanced_says_so_first_and_resumes_exactly"]),
    Mutant("a balanced epoch drawn unseeded", "docs/training.md Imbalanced classes", "src/mobilenet/data/batches.py",
           'replacement=True, generator=generator("cpu", seed, epoch, BALANCED))', "replacement=True)",
           [BL + "test_a_balanced_epoch_draws_every_class_alike_the_same_on_every_rank",
            BL + "test_auto_samples_an_imbalanced_run_balanced_says_so_first_and_resumes_exactly"]),
    Mutant("the kept epoch chosen by top-1 whatever --select-by says", "docs/training.md Imbalanced classes",
           "src/mobilenet/training/loop.py", "SELECT_BY[run.cfg.select_by][1])", '"val_acc")',
           [BL + "test_select_by_keeps_the_best_epoch_by_its_score_and_says_which"]),
    Mutant("validation's per-class counts not added up over the ranks", "docs/training.md Imbalanced classes",
           "src/mobilenet/training/scoring.py",
           'metrics = Metrics(len(source.classes), False).from_list(dist.sum(*found["metrics"][0].to_list()))\n    means',
           'metrics = found["metrics"][0]\n    means',
           ["tests/test_distributed.py::test_augment_auto_a_label_file_and_balanced_choices_under_two_processes"]),
    # --- label files ---------------------------------------------------------------------
    Mutant("a label file's path may leave its folder", "docs/training.md Labels from a file",
           "src/mobilenet/data/labels.py", "if not within(key, folder):", "if False:",
           [LB + "test_paths_and_links_that_leave_the_files_folder_are_refused"]),
    Mutant("a label file's BOM read as part of its header", "docs/training.md Labels from a file",
           "src/mobilenet/data/labels.py", 'raw.decode("utf-8-sig")', 'raw.decode("utf-8")',
           [LB + "test_a_spreadsheets_csv_reads_with_its_bom_quoting_and_columns"]),
    Mutant("multi-label thresholds chosen on the test split", "docs/training.md Several labels per image",
           "src/mobilenet/training/scoring.py", "batches = source.val_batches(batch_size, dist.rank, dist.world)",
           "batches = source.test_batches(batch_size, dist.rank, dist.world)",
           [ML + "test_a_multi_label_run_keeps_thresholds_chosen_on_validation_only"]),
    Mutant("positive-label weights inverted", "docs/training.md Several labels per image",
           "src/mobilenet/training/balance.py", "[(images - n) / n if n else 1.0 for n in counts]",
           "[n / (images - n) if n else 1.0 for n in counts]",
           [ML + "test_positive_weights_and_the_loss_by_hand"]),
    Mutant("multi-label validation not gathered under torchrun", "docs/training.md Several labels per image",
           "src/mobilenet/training/scoring.py", "rows = dist.gather(np.concatenate([metrics.scores, metrics.targets], 1))",
           "rows = np.concatenate([metrics.scores, metrics.targets], 1)",
           ["tests/test_distributed.py::test_a_multi_label_run_chooses_its_thresholds_on_every_process_validation_images"]),
    Mutant("a multi-label sweep picks by label accuracy", "docs/sweep.md", "src/mobilenet/sweep/run.py",
           '"val_map" if several else "val_acc"', '"val_acc"',
           [ML + "test_a_multi_label_sweep_picks_on_validation_map"]),
]


def copy_tree(into: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, into / name)


def environment(copy: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy / "src"), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def check_resolution(copy: Path) -> None:
    """The copy's package, not the editable install, is what every way of starting it imports."""
    env = environment(copy)
    probe = "import mobilenet, sys; sys.stdout.write(mobilenet.__file__)"
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert found.startswith(str(copy / "src")), f"python imports {found}, not the copy"
    script = Path(sys.executable).with_name("mobilenet")
    if script.exists():  # the console script: a planted syntax error must reach it
        (copy / "src" / "mobilenet" / "__init__.py").write_text(
            (ROOT / "src" / "mobilenet" / "__init__.py").read_text() + "\nraise SystemExit('the copy')\n")
        r = subprocess.run([str(script), "--version"], env=env, capture_output=True, text=True)
        shutil.copy2(ROOT / "src" / "mobilenet" / "__init__.py", copy / "src" / "mobilenet" / "__init__.py")
        assert "the copy" in r.stderr, f"the mobilenet script does not import the copy: {r.stderr[-300:]}"


def plant(copy: Path, mutant: Mutant) -> None:
    path = copy / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name!r}: {mutant.old!r} is in {mutant.path} {count} times, not once; "
                         "update the list")
    path.write_text(text.replace(mutant.old, mutant.new))


def run_tests(copy: Path, tests: list[str], stop_early: bool = True) -> tuple[int, str]:
    """pytest's status and its output (the summary line last)."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-x"] if stop_early else []),
                        *tests], cwd=copy, env=environment(copy), capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def last_line(output: str) -> str:
    return output.splitlines()[-1] if output else ""


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    if names and len(chosen) != len(names):
        raise SystemExit(f"unknown mutants: {sorted(set(names) - {m.name for m in MUTANTS})}")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base)
        check_resolution(base)
        for mutant in chosen:  # every mutant applies, before any test runs
            plant(base, mutant)
            shutil.rmtree(base)
            copy_tree(base)
        tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
        status, output = run_tests(base, tests, stop_early=False)
        print(f"baseline: {len(tests)} tests on the unplanted copy: {last_line(output)}", flush=True)
        if status != 0:
            print(output[-5000:])
            print("the named tests fail without any planted bug; fix that first")
            return 1
        results = []
        for i, mutant in enumerate(chosen):
            copy = Path(tmp) / f"m{i}"
            copy_tree(copy)
            plant(copy, mutant)
            start = time.perf_counter()
            status, output = run_tests(copy, mutant.tests)
            verdict = {0: "SURVIVED", 1: "killed"}.get(status, f"ERROR (pytest status {status})")
            results.append(verdict)
            print(f"{verdict:9} {mutant.name} [{mutant.promise}; {mutant.path}] {time.perf_counter() - start:.0f}s: {last_line(output)}",
                  flush=True)
            shutil.rmtree(copy)
    killed = results.count("killed")
    print(f"{killed} of {len(results)} mutants killed in {time.perf_counter() - began:.0f}s")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
