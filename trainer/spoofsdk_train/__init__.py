"""spoofsdk trainer: data -> model -> loop -> metrics -> export (torch; imports spoofsdk, never the other way).

Entry point: ``spoofsdk-train`` (:mod:`spoofsdk_train.cli`); see docs/TRAINING.md.
"""
