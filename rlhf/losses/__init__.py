"""Losses as pure functions of tensors returning `(loss, metrics)`; each docstring gives the formula,
its source and the shapes."""
