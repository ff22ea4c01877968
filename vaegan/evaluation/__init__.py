"""Evaluation protocols over trained models: FID/KID and download-free metrics, comparisons, reports.
"""
