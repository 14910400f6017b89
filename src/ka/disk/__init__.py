"""ka.disk"""
