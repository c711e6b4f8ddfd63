"""What a model folder or an exported file holds and who may replace it: the run folder's files
(folder), a model's classes and input (info), and the rule for files the tool did not write
(ownership)."""
