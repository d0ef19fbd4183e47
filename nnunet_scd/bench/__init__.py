"""``nnunet-scd bench``: interleaved timing, FLOPs and memory of SCDNet against the dense UNETR.

The settings it measures are the rows of ``nnunet_scd.geometry.CONFIGS``.
"""
