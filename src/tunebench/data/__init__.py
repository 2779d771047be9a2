"""tunebench.data"""
