"""One file per algorithm, each with a `Config` dataclass and `train(cfg) -> Result`."""
