"""A user's own package, as a reader of autogram's docs would write it: a Hugging Face
teacher (ViT for the digit image, an Audio Spectrogram Transformer for the spoken digit,
a small Transformer fusing both), a student of its own design from torchvision blocks,
and AV-MNIST as a Hugging Face ``DatasetDict`` on disk. Nothing here imports autogram."""
