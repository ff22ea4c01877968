"""vaegan: VAE-GAN hybrid image generators after Larsen et al. 2016."""
__version__ = "0.1.0"
