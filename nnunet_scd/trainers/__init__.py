"""The nnU-Net trainers of nnunet-scd.

- ``base``: ``RecipeTrainer`` (nnU-Net's trainer with a recipe, a seed and an epoch breakdown) and
  ``ViTTrainer`` (SCDNet, AdamW, token diagnostics), the base of every ViT trainer.
- ``recipe``: the ``Recipe`` a trainer trains by, and the ``LENGTHS`` table of shorter runs.
- ``public``: ``nnUNetTrainerSCD``, ``nnUNetTrainerUNETR``, the MIM baseline, random pruning, the
  Zhou2023 reproductions, and their ``_Tiny`` forms.
- ``ablations``: one change each against ``nnUNetTrainerSCD``.
- ``search``: joint search, and fine-tuning of the sliced network; ``derive_slim`` sits between.
- ``catalog``: every shipped trainer by name, with the CPU-length variants made from one table.
- ``shim/``: the folder ``nnUNet_extTrainer`` lists (``nnunet-scd env`` prints it).

Importing this package imports nothing else, so the pure helpers (``recipe``, ``seeding``,
``training_log``) stay cheap to import.
"""
