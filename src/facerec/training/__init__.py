"""Training: the options schema (:mod:`.config`), data, the LightningModule, run folders, the
entry point, and sweeps."""
