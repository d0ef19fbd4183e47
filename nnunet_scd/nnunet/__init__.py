"""The nnU-Net glue below the trainers: planner, predictor, checkpoints, token configuration, slim plans.

The trainers are in ``nnunet_scd.trainers``; nothing here imports them.
"""
