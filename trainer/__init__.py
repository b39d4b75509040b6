"""spoofsdk trainer: data -> model -> loop -> metrics -> export (torch; imports spoofsdk, never the other way).

Entry point: ``spoofsdk-train`` (:mod:`trainer.cli`); see docs/TRAINING.md.
"""
