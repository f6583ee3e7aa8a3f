"""The ground every part stands on: the soak clock, the domain model (states, error classes,
retry policy), the exception hierarchy, the home's layout, the profiles and the heap setting.

Imports nothing else of the package.
"""
