"""Run directories: their files and who may write them, the one-writer lock, samples and plots."""
