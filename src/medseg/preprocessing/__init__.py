"""medseg.preprocessing"""
