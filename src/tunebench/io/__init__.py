"""tunebench.io"""
