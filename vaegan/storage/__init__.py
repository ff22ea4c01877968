"""Everything a run leaves on disk: checkpoints, saved configs, exports, the fitted latent prior.

Pickle-free (safetensors + JSON) and atomic; loading needs no training code.
"""
