"""Measuring what came out: image metrics and the Shapes attribute checker.

    metrics.py         PSNR
    shapes_checker.py  reads shape, colour, size and position back from Shapes pixels; accuracy and spread
"""
