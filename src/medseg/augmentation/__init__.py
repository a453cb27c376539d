"""medseg.augmentation"""
