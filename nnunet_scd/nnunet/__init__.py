"""The nnU-Net glue: trainers, and token/patch configuration from nnU-Net's plans.

nnU-Net finds the trainers through the shim folder ``<repo>/trainers`` listed in the
environment variable ``nnUNet_extTrainer`` (``eval "$(nnunet-scd env)"`` sets it).
"""
