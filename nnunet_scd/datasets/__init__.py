"""Datasets for nnunet-scd: seeded synthetic CT phantoms and a converter for the BTCV raw data.

Both write nnU-Net v2 raw datasets (``Dataset<id>_Name/imagesTr``, ``labelsTr``, ``dataset.json``).
Import the submodules directly (``nnunet_scd.datasets.phantom``, ``nnunet_scd.datasets.btcv``).
"""
