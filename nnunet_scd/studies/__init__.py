"""Dice studies over arms and seeds, run through nnU-Net's own commands; never imported by nnU-Net."""
