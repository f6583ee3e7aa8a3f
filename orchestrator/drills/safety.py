"""(drills added below)"""
