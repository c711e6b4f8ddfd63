"""One training run, from its options to its folder: the config, the settings a resumed run
keeps, the loop and its step, optimizer, EMA, state, log, scoring, the augmentation trial,
distributed launch, and starting weights."""
