"""What users do with a trained model: compression, generation, anomaly scores, attribute vectors, the latent prior.
"""
