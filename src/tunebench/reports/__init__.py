"""tunebench.reports"""
