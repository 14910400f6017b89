"""ka.clone"""
