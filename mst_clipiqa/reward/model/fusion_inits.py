"""How the fusion weights start (``MSTCLIPIQAConfig.init``); a module of its own so that the training config offers
the names without importing torch."""

FUSION_INITS = ("zero_shot", "random")
