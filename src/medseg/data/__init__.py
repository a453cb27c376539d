"""medseg.data"""
