"""The active-learning loop: experiments, their run files, the runner, sweeps, dry runs and tracking."""
