"""ka.lab"""
