"""Tensor helpers shared by the teacher and the distillation: devices, batches, accuracy, loss maths."""
