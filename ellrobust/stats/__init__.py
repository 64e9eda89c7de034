"""Floor 1: pure statistics: intervals, paired tests, power, Holm, ε* curves, mCE, calibration, OOD
detection and collapse metrics. Functions of arrays; no models, no files.
"""
