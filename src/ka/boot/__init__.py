"""ka.boot"""
