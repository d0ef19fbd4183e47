"""The ``nnunet-scd demo`` pipeline: phantoms -> nnU-Net plan/preprocess -> train SCD and dense UNETR ->
predict -> evaluate -> report (table, throughput plot, kept-token overlay, segmentation figure).

Modules: ``config`` (the two settings; their trainers are in ``nnunet_scd.trainers.catalog``), ``steps`` (the nnU-Net
subprocess steps), ``measure`` (parameters, FLOPs, timings, epoch times), ``report`` (the table),
``plots`` (the figures), ``pipeline`` (runs it all). Nothing here is imported by ``--help``.
"""
