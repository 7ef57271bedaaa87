"""Situation assessment: hot-spot forecasts per grid cell, their honest evaluation, and situation reports."""
