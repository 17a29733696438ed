"""Data: every source (text, Hugging Face, images, audio, tables), the tokenized splits, training
batches, streaming, orderings and augmentation."""
