"""ka.transport"""
