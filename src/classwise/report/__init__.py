"""Presentation: plots (data in, Axes out), terminal tables and reports. Matplotlib is imported lazily."""
