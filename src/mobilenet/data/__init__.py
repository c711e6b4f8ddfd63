"""Bytes become batches: image files and Fashion-MNIST's IDX files (images, no torch), the
augmentation presets (augment), and the training sources (sources). The only area that knows
Fashion-MNIST and image folders."""
